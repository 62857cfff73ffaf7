"""``squall serve``: the HTTP API, token auth, the job queue with its worker pool, the warm pool and the dashboard.

FastAPI and uvicorn are imported only inside this package (``pip install 'squall[serve]'``).
"""
