"""The edge: the aiohttp application that takes task requests and answers them (the worker imports
nothing from this package)."""
