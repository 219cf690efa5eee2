"""The two seeds: what differs per model (its data, network and evaluation), declared once each."""
