"""The local backend: worker processes on this machine, forked warm from a fork server (see :mod:`.backend`)."""
