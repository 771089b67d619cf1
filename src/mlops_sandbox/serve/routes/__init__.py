"""The prediction service's routes, one module per concern; `serve.app.create_app` includes their routers."""
