"""Types shared by the gateway and the workers: the public JSON API and the internal wire."""
