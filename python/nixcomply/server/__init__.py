"""The MSP's evidence server (``nixcomply-server``): FastAPI over PostgreSQL. Never imports
host runtime; its dependencies are the ``server`` extra."""
