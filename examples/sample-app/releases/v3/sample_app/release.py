"""The release this tree is (changed by every release commit)."""

RELEASE = "v3"
FEATURES: tuple[str, ...] = ("users", "transactions", "balances", "categories", "fees")
