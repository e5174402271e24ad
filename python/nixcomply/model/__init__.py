"""Wire types shared by host, uplink and server: the strict model base, severities, statuses,
outcomes, and the manifest a system generation carries.

Nothing here imports host runtime; the server and the uplink may import it.
"""
