"""Imports of files users export from their devices' own apps (an Apple Health `export.zip`),
as opposed to the providers' APIs wearsync syncs from: an upload checked by the API, then parsed
and stored by a worker, with progress on a task like a sync's."""
