"""Side-by-side benchmark of reqspec_repo (``python -m bench``, ``make bench``)."""
