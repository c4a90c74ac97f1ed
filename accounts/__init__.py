"""The ledger of *who* and *how much*: users, their hashed tokens, quotas, the rate limiter and its bans.

As `keypool/` is the ledger of which key, this room is the ledger of which
person. It sits below `gateway/` and beside `queues/`: the gateway asks it who
a credential belongs to and whether the request may go; it never imports the
gateway.
"""
