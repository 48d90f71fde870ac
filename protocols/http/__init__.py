"""HTTP: the API's routes and the transport under them."""
