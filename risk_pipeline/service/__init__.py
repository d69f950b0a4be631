"""The risk service: an HTTP API (FastAPI on uvicorn) over the published warehouse tables, without Dagster.

``create_app`` (``app.py``) builds it; ``risk-pipeline serve`` runs it. Modules: ``auth`` (bearer tokens
and roles), ``schemas`` (pydantic bodies), ``core`` (the service state and its watcher), ``documents``
(published documents), ``metrics`` (Prometheus text format), ``stream`` (server-sent events).
"""
