"""The pure domain: models, states, transitions, events and the ports (Protocols) every back-end implements.

Nothing here imports a framework; everything here can be tested without I/O.
"""
