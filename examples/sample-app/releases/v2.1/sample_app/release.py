"""The release this tree is (changed by every release commit)."""

RELEASE = "v2.1"
FEATURES: tuple[str, ...] = ("users", "transactions", "balances", "categories")
