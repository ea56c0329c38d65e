"""The release this tree is (changed by every release commit)."""

RELEASE = "v3-slow"
FEATURES: tuple[str, ...] = ("users", "transactions", "balances", "categories", "fees")
