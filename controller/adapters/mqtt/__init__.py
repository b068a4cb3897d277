"""MQTT: the NJet event listener and retained-record reader, over TCP or NJet's unix socket."""
