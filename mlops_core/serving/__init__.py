"""Online scoring: the request contract, model slots, traffic routing, the prediction log and the ASGI app.

Everything here except `app.py` and `server.py` is free of web-framework imports, and none of it imports dagster.
"""
