"""`make bench`: the real wearsync processes under load; see bench/README.md."""
