"""HTTP views on Faust's aiohttp web server: the Send API, health, metrics, OpenAPI."""
