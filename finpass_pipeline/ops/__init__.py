"""Operator commands on what the consumer keeps aside: dead letters, parked events, offsets."""
