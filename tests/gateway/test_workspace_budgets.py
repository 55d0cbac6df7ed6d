"""Budgets of workspaces created through the admin API, resolved against the catalog (SPEC §2.6,
§3.1: V0's body names no downgrade target)."""

from __future__ import annotations

from concord.engine.decision import CatalogModel, Price
from concord.gateway.workspace_directory import budget_rule
from concord.records.workspaces import Budget

V0_DOWNGRADE = Budget(limit_usd=1.0, on_exceed="downgrade")


def catalog(**prices: Price | None) -> dict[str, CatalogModel]:
    return {name: CatalogModel(name, (), price=price) for name, price in prices.items()}


def test_a_v0_downgrade_goes_to_the_cheapest_model_that_writes_answers() -> None:
    models = catalog(
        big=Price(input=3, output=15),
        small=Price(input=0.15, output=0.6),
        embed=Price(input=0.02),  # cheapest, but priced for input only: an embeddings model
        unpriced=None,
    )
    rule = budget_rule("team", V0_DOWNGRADE, models)
    assert (rule.on_exceed, rule.downgrade_to) == ("downgrade", "small")


def test_a_v0_downgrade_with_only_embeddings_models_priced_blocks() -> None:
    rule = budget_rule("team", V0_DOWNGRADE, catalog(embed=Price(input=0.02), chat=None))
    assert (rule.on_exceed, rule.downgrade_to) == ("block", None)
