"""The release this tree is (changed by every release commit)."""

RELEASE = "v1"
FEATURES: tuple[str, ...] = ("users", "transactions", "balances")
