"""signalscore-client: a typed Python client (sync and async) and the `signalscore-client`
command line for the signalscore API."""

from signalscore_client._calls import ENDPOINTS, UNSET
from signalscore_client.aio import AsyncClient
from signalscore_client.client import Client
from signalscore_client.errors import ApiError, SignalscoreError, TransportError
from signalscore_client.retry import NO_RETRY, RetryPolicy
from signalscore_client.webhooks import WebhookVerificationError
from signalscore_client.webhooks import sign as sign_webhook
from signalscore_client.webhooks import verify as verify_webhook

__version__ = "0.1.0"

__all__ = [
    "ENDPOINTS",
    "NO_RETRY",
    "UNSET",
    "ApiError",
    "AsyncClient",
    "Client",
    "RetryPolicy",
    "SignalscoreError",
    "TransportError",
    "WebhookVerificationError",
    "__version__",
    "sign_webhook",
    "verify_webhook",
]
