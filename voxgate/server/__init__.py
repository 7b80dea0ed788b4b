"""The server: one process hosting every device protocol (see ``voxgate serve``)."""
