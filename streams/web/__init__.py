"""HTTP views on Faust's aiohttp web server: the Send API, health, metrics, OpenAPI.

Twilio's requests and the call tool's views are in :mod:`streams.twilio`, which builds on this
package's plumbing (``common.py``, ``routing.py``) and is never imported by it; their part of the
OpenAPI document is ``openapi_twilio.py``, here with the rest of the document."""
