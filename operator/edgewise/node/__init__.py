"""The node runtime: model server, node agent cache and fetcher; imports only edgewise.contract."""
