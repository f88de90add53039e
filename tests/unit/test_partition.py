"""The partition judge: the policy's grammar, the table of cases, and the safety properties
(an UNKNOWN view never makes a refusal nor a fence)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openstack_ha.consul import NetworkView, sampled
from openstack_ha.partition import (
    DEFAULT_POLICY,
    Action,
    Judgement,
    Policy,
    Verdict,
    judge,
    parse_policy,
)

NETWORKS = ("management", "storage", "tenant")
A, F, U = NetworkView.ALIVE, NetworkView.FAILED, NetworkView.UNKNOWN


def views(management: NetworkView, storage: NetworkView, tenant: NetworkView) -> dict[str, NetworkView]:
    return {"management": management, "storage": storage, "tenant": tenant}


@pytest.fixture
def default() -> Policy:
    return parse_policy(DEFAULT_POLICY, NETWORKS)


# -- the default policy, case by case ----------------------------------------------------------

def test_management_only_lost_is_refused(default: Policy) -> None:
    judgement = judge(default, views(F, A, A))
    assert judgement.verdict is Verdict.REFUSE
    assert judgement.reason == ("management=failed storage=alive tenant=alive: only management is"
                                " lost; refusing (partition_policy rule management=refuse)")
    assert judgement.rule == "management=refuse"
    assert judgement.views == views(F, A, A)


def test_failed_everywhere_is_fenced(default: Policy) -> None:
    judgement = judge(default, views(F, F, F))
    assert judgement.verdict is Verdict.FENCE
    assert judgement.reason == ("management=failed storage=failed tenant=failed: failed on every"
                                " network; fencing (partition_policy rule *=fence)")


@pytest.mark.parametrize("seen", [views(A, F, A), views(F, F, A), views(A, F, F), views(U, F, U),
                                  views(F, F, U)])
def test_failed_on_storage_is_fenced(default: Policy, seen: dict[str, NetworkView]) -> None:
    judgement = judge(default, seen)
    assert judgement.verdict is Verdict.FENCE
    assert judgement.rule == "storage=fence"
    assert "failed on storage; fencing (partition_policy rule storage=fence)" in judgement.reason


@pytest.mark.parametrize("seen", [views(F, A, U), views(F, U, A), views(F, U, U)])
def test_an_unknown_on_the_alive_side_gives_no_opinion(default: Policy,
                                                       seen: dict[str, NetworkView]) -> None:
    judgement = judge(default, seen)
    assert judgement.verdict is Verdict.NO_OPINION
    assert judgement.rule is None
    assert "rule management=refuse would refuse but needs" in judgement.reason
    assert "seen alive; no opinion" in judgement.reason


def test_all_unknown_gives_no_opinion(default: Policy) -> None:
    judgement = judge(default, views(U, U, U))
    assert judgement.verdict is Verdict.NO_OPINION
    assert judgement.reason == ("management=unknown storage=unknown tenant=unknown:"
                                " no network gives a view; no opinion")
    assert judge(default, {}).reason == judgement.reason  # missing networks are unknown


@pytest.mark.parametrize("seen", [views(A, A, A), views(A, A, F), views(F, A, F), views(A, A, U),
                                  views(U, A, F)])
def test_combinations_without_a_rule_give_no_opinion(default: Policy,
                                                     seen: dict[str, NetworkView]) -> None:
    judgement = judge(default, seen)
    assert judgement.verdict is Verdict.NO_OPINION
    assert judgement.reason.endswith("no partition_policy rule matches; no opinion")


def test_the_reason_names_every_configured_network_in_order(default: Policy) -> None:
    judgement = judge(default, {"tenant": A, "storage": F, "elsewhere": A,
                                "management": "failed"})  # type: ignore[dict-item]
    assert judgement.reason.startswith("management=unknown storage=failed tenant=alive: ")
    assert set(judgement.views) == set(NETWORKS)


def test_two_networks_as_in_the_lab() -> None:
    policy = parse_policy(DEFAULT_POLICY, ["management", "storage"])
    assert judge(policy, {"management": F, "storage": A}).verdict is Verdict.REFUSE
    assert judge(policy, {"management": F, "storage": F}).rule == "*=fence"
    assert judge(policy, {"management": A, "storage": F}).rule == "storage=fence"
    assert judge(policy, {"management": F, "storage": U}).verdict is Verdict.NO_OPINION


def test_a_refuse_rule_over_several_networks() -> None:
    policy = parse_policy("management + tenant = refuse; *=fence", NETWORKS)
    judgement = judge(policy, views(F, A, F))
    assert judgement.verdict is Verdict.REFUSE
    assert "only management and tenant are lost; refusing (partition_policy rule" \
           " management+tenant=refuse)" in judgement.reason
    assert judge(policy, views(F, A, A)).verdict is Verdict.NO_OPINION  # not exactly that set


def test_flapping_is_unknown_through_sampling_so_no_opinion(default: Policy) -> None:
    """A management link cut and restored every second: the window is mixed, so no refusal;
    storage failing and coming back: no fence either."""
    flapping = itertools.cycle([F, A])
    steady_alive = itertools.repeat(A)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def sample(readings: Iterator[NetworkView]) -> NetworkView:
        return sampled(lambda: next(readings), 3, 1.0, sleep=sleep, clock=lambda: now[0])

    seen = {"management": sample(flapping), "storage": sample(steady_alive),
            "tenant": sample(steady_alive)}
    assert seen == views(U, A, A)
    assert judge(default, seen).verdict is Verdict.NO_OPINION
    seen = {"management": sample(itertools.repeat(F)), "storage": sample(itertools.cycle([F, A])),
            "tenant": sample(itertools.repeat(F))}
    assert judge(default, seen).verdict is Verdict.NO_OPINION


# -- the grammar -------------------------------------------------------------------------------

def test_the_default_policy_parses() -> None:
    policy = parse_policy(DEFAULT_POLICY, NETWORKS)
    assert policy.networks == NETWORKS
    assert [(sorted(rule.failed), rule.action) for rule in policy.rules] == [
        (["storage"], Action.FENCE), (sorted(NETWORKS), Action.FENCE),
        (["management"], Action.REFUSE)]
    assert policy.text == "storage=fence; *=fence; management=refuse"


def test_white_space_and_a_trailing_semicolon_are_allowed() -> None:
    policy = parse_policy("  storage = fence ;\t management+ tenant=refuse ; ", NETWORKS)
    assert [rule.text for rule in policy.rules] == ["storage=fence", "management+tenant=refuse"]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "names no rule"),
    (" ; ", "rule 1 is empty"),
    ("storage=fence;;*=fence", "rule 2 is empty"),
    ("storage", "rule 1 'storage' is not networks=action"),
    ("storage=fence=refuse", "is not networks=action"),
    ("storage=Fence", "the action must be fence or refuse"),
    ("storage=reboot", "the action must be fence or refuse"),
    ("=fence", "'' is not a configured consul network"),
    ("ceph=fence", "'ceph' is not a configured consul network (management, storage, tenant)"),
    ("storage+=fence", "'' is not a configured"),
    ("*+storage=fence", "'*' stands alone"),
    ("storage+storage=fence", "names a network twice"),
    ("storage=fence; storage=fence", "rule 2 storage=fence repeats storage=fence"),
    ("storage=fence; storage=refuse", "rule 2 storage=refuse contradicts storage=fence"),
    ("*=fence; management+storage+tenant=fence", "repeats *=fence"),
    ("*=refuse", "cannot be about every network"),
    ("management+storage+tenant=refuse", "cannot be about every network"),
    ("storage=fence; storage+management=refuse", "would match both"),
    ("storage+management=refuse; storage=fence", "would match both"),
], ids=lambda value: value)
def test_bad_policies_are_one_line_value_errors(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_policy(text, NETWORKS)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_default_needs_its_networks_configured() -> None:
    with pytest.raises(ValueError, match="'storage' is not a configured consul network"):
        parse_policy(DEFAULT_POLICY, ["management", "tenant"])
    with pytest.raises(ValueError, match="no consul networks"):
        parse_policy(DEFAULT_POLICY, [])


# -- properties ---------------------------------------------------------------------------------

network_sets = st.lists(st.sampled_from(NETWORKS), min_size=1, unique=True)
rule_texts = st.tuples(st.just("*").map(lambda star: [star]) | network_sets,
                       st.sampled_from(["fence", "refuse"])).map(
    lambda rule: "+".join(rule[0]) + "=" + rule[1])
views_strategy = st.fixed_dictionaries({name: st.sampled_from([A, F, U]) for name in NETWORKS})


def valid_policies() -> st.SearchStrategy[Policy]:
    def build(texts: list[str]) -> Policy | None:
        try:
            return parse_policy("; ".join(texts), NETWORKS)
        except ValueError:
            return None
    return st.lists(rule_texts, min_size=1, max_size=6).map(build).filter(
        lambda policy: policy is not None)  # type: ignore[return-value]


def matching_rule(policy: Policy, judgement: Judgement) -> frozenset[str]:
    return next(rule.failed for rule in policy.rules if rule.text == judgement.rule)


@settings(max_examples=500, deadline=None)
@given(policy=valid_policies(), seen=views_strategy)
def test_a_refusal_needs_every_network_known_and_the_rest_alive(
        policy: Policy, seen: dict[str, NetworkView]) -> None:
    judgement = judge(policy, seen)
    if judgement.verdict is not Verdict.REFUSE:
        return
    lost = matching_rule(policy, judgement)
    assert all(seen[name] is F for name in lost)
    assert all(seen[name] is A for name in NETWORKS if name not in lost)
    assert U not in seen.values()
    assert A in seen.values()  # seen alive somewhere


@settings(max_examples=500, deadline=None)
@given(policy=valid_policies(), seen=views_strategy)
def test_a_fence_needs_every_network_of_its_rule_failed(
        policy: Policy, seen: dict[str, NetworkView]) -> None:
    judgement = judge(policy, seen)
    if judgement.verdict is Verdict.FENCE:
        assert all(seen[name] is F for name in matching_rule(policy, judgement))
    else:
        assert judgement.verdict is Verdict.NO_OPINION or judgement.verdict is Verdict.REFUSE
    assert judgement.reason.startswith(" ".join(f"{n}={seen[n].value}" for n in NETWORKS) + ": ")
    assert "\n" not in judgement.reason


@settings(max_examples=500, deadline=None)
@given(policy=valid_policies(), seen=views_strategy, data=st.data())
def test_unknown_views_make_nothing_happen(policy: Policy, seen: dict[str, NetworkView],
                                           data: st.DataObject) -> None:
    """Learning more (an UNKNOWN becoming ALIVE or FAILED) is what may bring a verdict: a
    verdict given with an UNKNOWN stays when that network turns either way, except that a
    refusal cannot exist with an UNKNOWN at all."""
    judgement = judge(policy, seen)
    unknown = [name for name in NETWORKS if seen[name] is U]
    if not unknown:
        return
    assert judgement.verdict is not Verdict.REFUSE
    if judgement.verdict is Verdict.FENCE:
        name = data.draw(st.sampled_from(unknown))
        for learnt in (A, F):
            assert judge(policy, {**seen, name: learnt}).verdict is Verdict.FENCE


@settings(max_examples=200, deadline=None)
@given(policy=valid_policies())
def test_all_unknown_is_never_an_opinion(policy: Policy) -> None:
    assert judge(policy, dict.fromkeys(NETWORKS, U)).verdict is Verdict.NO_OPINION


@settings(max_examples=1000, deadline=None)
@given(text=st.text(max_size=60) | st.lists(
    st.text(alphabet="*+=; \tmanagestorfcuse", max_size=20) | rule_texts, max_size=5).map("; ".join))
def test_parse_policy_gives_a_policy_or_a_value_error(text: str) -> None:
    try:
        policy = parse_policy(text, NETWORKS)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert policy.rules
    assert parse_policy(policy.text, NETWORKS) == policy  # its own text says the same


def _every_view() -> list[dict[str, NetworkView]]:
    return [dict(zip(NETWORKS, combination, strict=True))
            for combination in itertools.product((A, F, U), repeat=len(NETWORKS))]


@pytest.mark.parametrize("seen", _every_view(),
                         ids=lambda seen: "-".join(view.value[0] for view in seen.values()))
def test_the_default_over_every_combination(default: Policy, seen: dict[str, NetworkView]) -> None:
    """The whole table of the default policy, spelled out from the issue's words."""
    if seen["storage"] is F:
        verdict = Verdict.FENCE  # failed on storage, or on every network
    elif seen == views(F, A, A):
        verdict = Verdict.REFUSE  # alive on storage and tenant, only management lost
    else:
        verdict = Verdict.NO_OPINION
    assert judge(default, seen).verdict is verdict
