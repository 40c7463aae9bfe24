"""A key bound to a business customer (SPEC §12): its calls name the customer, are charged to the
department the policy in force gives the customer, and cannot be moved to another department."""

from __future__ import annotations

import pytest

from costwarden import errors
from costwarden.app.auth import KeyIdentity, attribute
from costwarden.core.scopes import Caller
from costwarden.policy import parse_policy

POLICY = parse_policy("""
version: 1
departments:
  PRODUCT: {}
  SALES: {}
plans:
  gold: {budgets: [{limit: 100, period: monthly, action: reject}]}
customers:
  ACME:   {plan: gold, department: PRODUCT}
  GLOBEX: {plan: gold, department: SALES}
""")


def test_a_customer_key_attributes_the_customer_and_its_department() -> None:
    found = attribute(POLICY, KeyIdentity("k1", "PRODUCT", customer="ACME"), {"x-user-id": "u1"}, {})
    assert found.caller == Caller("PRODUCT", None, "k1", "u1", "ACME")
    named = attribute(POLICY, KeyIdentity("k1", "PRODUCT", customer="ACME"), {"x-department-id": "product"}, {})
    assert named.caller.customer == "ACME"


def test_a_customer_key_cannot_name_another_department() -> None:
    with pytest.raises(errors.DepartmentMismatch):
        attribute(POLICY, KeyIdentity("k1", "PRODUCT", customer="ACME"), {"x-department-id": "SALES"}, {})


def test_a_customer_moved_to_another_department_is_charged_there() -> None:
    # the key was issued while GLOBEX belonged to PRODUCT; the policy in force says SALES
    found = attribute(POLICY, KeyIdentity("k2", "PRODUCT", customer="GLOBEX"), {}, {})
    assert (found.caller.department, found.caller.customer) == ("SALES", "GLOBEX")


def test_a_key_of_a_customer_the_policy_no_longer_declares_is_refused() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        attribute(POLICY, KeyIdentity("k3", "PRODUCT", customer="INITECH"), {}, {})
    assert caught.value.code == "unknown_customer" and "INITECH" in caught.value.message
