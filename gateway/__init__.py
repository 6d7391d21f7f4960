"""The HTTP gateway: validates requests, owns the model store, schedules runners, relays tokens."""
