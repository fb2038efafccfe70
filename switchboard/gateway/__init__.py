"""The generic HTTP gateway provider (``provider: http``), its pure part: options, request
templates and response mapping. Imports no HTTP client; ``transports/http_gateway.py`` runs it.

* :mod:`switchboard.gateway.template`: ``{{placeholder}}`` templates for the URL, headers and body;
* :mod:`switchboard.gateway.response`: how an answer maps to success, retryable or permanent
  failure and to the provider message id, per address;
* :mod:`switchboard.gateway.config`: the channel options of ``clients.yaml``, checked at once.
"""

from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.response import Outcome, classify
from switchboard.gateway.template import Template

__all__ = ["GatewayConfig", "Outcome", "Template", "classify"]
