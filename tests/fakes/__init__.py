"""Local servers that speak real providers' wire protocols (Twilio REST, APNs HTTP/2 over TLS,
FCM HTTP v1 with its OAuth token endpoint, Slack Web API and webhooks), so every transport is
tested through its real SDK or HTTP client without leaving the machine."""
