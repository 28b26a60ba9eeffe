"""Web page routers."""
