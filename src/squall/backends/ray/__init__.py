"""The Ray backend: worker actors on a Ray cluster (see :mod:`.backend`); Ray itself is imported only when a job runs."""
