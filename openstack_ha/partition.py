"""The partition judge: from a node's view on each network, fence, refuse, or no opinion.

A pure function over plain data (`judge`), so fence_nova and the NovaEvacuate worker read
Consul their own way (`openstack_ha.consul`) and decide alike.

The policy is a matrix written as text, as masakari-monitors' Consul driver has it, one rule
per combination of networks lost::

    policy := rule { ";" rule } [";"]
    rule   := networks "=" action
    networks := "*" | name { "+" name }      (names from the configured consul networks)
    action := "fence" | "refuse"

for example the default, `DEFAULT_POLICY`: ``storage=fence; *=fence; management=refuse``.
White space around the tokens is ignored. ``*`` is every configured network.

What a rule means, the two actions on purpose not alike, since a refusal stops a fence that
Pacemaker asked for and a fence verdict only agrees with it:

- ``refuse``: matches when exactly its networks are FAILED and every other configured network
  is positively ALIVE. An UNKNOWN anywhere, or another network FAILED too, and it does not
  match. It must leave at least one network out (a refusal needs the node seen alive
  somewhere), so ``*=refuse`` is an error.
- ``fence``: matches when each of its networks is FAILED, whatever the others say (FAILED,
  ALIVE or UNKNOWN): ``storage=fence`` reads "failed on storage", with or without the other
  networks. So the default fences a node failed on storage or on every network, and refuses
  only when management alone is lost while storage and the rest are seen alive.

A policy where one combination of views could match a fence rule and a refuse rule alike
(a fence rule's networks all inside a refuse rule's) is contradictory and rejected, as is a
set of networks named twice. So at most one refuse rule matches, never beside a fence rule.

`judge` gives REFUSE when a refuse rule matches, FENCE when a fence rule matches (the reason
names the matching rule with most networks, the first written of equals), and NO_OPINION
otherwise: the fence then proceeds exactly as without Consul. No
UNKNOWN view can make a refusal (every network must be known for one) nor a fence (a fence
rule needs its networks FAILED).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from openstack_ha.consul import NetworkView, views_text

DEFAULT_POLICY = "storage=fence; *=fence; management=refuse"

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ALL = "*"


class Action(enum.Enum):
    """What a policy rule asks for."""

    FENCE = "fence"
    REFUSE = "refuse"


class Verdict(enum.Enum):
    """The judge's answer."""

    FENCE = "fence"
    REFUSE = "refuse"
    NO_OPINION = "no_opinion"


@dataclass(frozen=True)
class Rule:
    """One rule: the networks it is about (``*`` expanded) and its action; ``text`` is the rule
    as written, white space removed, for reasons."""

    failed: frozenset[str]
    action: Action
    text: str


@dataclass(frozen=True)
class Policy:
    """A parsed ``partition_policy``, for the configured ``networks`` (in their order)."""

    networks: tuple[str, ...]
    rules: tuple[Rule, ...]

    @property
    def text(self) -> str:
        return "; ".join(rule.text for rule in self.rules)


@dataclass(frozen=True)
class Judgement:
    """The verdict, a one-line reason naming each network's view, the views judged (every
    configured network, UNKNOWN where none was given), and the rule that decided, if any."""

    verdict: Verdict
    reason: str
    views: dict[str, NetworkView]
    rule: str | None = None


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def parse_policy(text: str, networks: Iterable[str]) -> Policy:
    """``text`` (see the module's grammar) as a Policy over the configured ``networks``.

    ValueError, one line, for bad syntax, an unknown network, a set of networks named twice
    (with the same action or not), a fence rule contradicting a refuse rule, or a refuse rule
    over every network.
    """
    configured: tuple[str, ...] = tuple(dict.fromkeys(networks))
    if not configured:
        raise ValueError("partition_policy: no consul networks are configured")
    for name in configured:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"partition_policy: configured network {name!r} is not a network name")
    if not isinstance(text, str):
        raise ValueError(f"partition_policy must be text, not {type(text).__name__}")
    items = [item.strip() for item in text.split(";")]
    if items and not items[-1]:
        items.pop()  # a trailing ";"
    if not items:
        raise ValueError(f"partition_policy names no rule (expected e.g. {DEFAULT_POLICY!r})")
    rules: list[Rule] = []
    for number, item in enumerate(items, start=1):
        where = f"partition_policy rule {number}"
        if not item:
            raise ValueError(f"{where} is empty")
        left, equals, right = (part.strip() for part in item.partition("="))
        if not equals or "=" in right:
            raise ValueError(f"{where} {_shown(item)} is not networks=action")
        try:
            action = Action(right)
        except ValueError:
            raise ValueError(f"{where} {_shown(item)}: the action must be fence or refuse") from None
        names = [name.strip() for name in left.split("+")]
        if names == [_ALL]:
            failed = frozenset(configured)
        else:
            for name in names:
                if name == _ALL:
                    raise ValueError(f"{where} {_shown(item)}: '*' stands alone, it is every network")
                if name not in configured:
                    raise ValueError(f"{where} {_shown(item)}: {_shown(name)} is not a configured"
                                     f" consul network ({', '.join(configured)})")
            if len(set(names)) != len(names):
                raise ValueError(f"{where} {_shown(item)} names a network twice")
            failed = frozenset(names)
        rule = Rule(failed, action, f"{'+'.join(names)}={action.value}")
        if action is Action.REFUSE and failed == frozenset(configured):
            raise ValueError(f"{where} {rule.text}: a refusal needs the node seen alive on some"
                             " network, so it cannot be about every network")
        for earlier in rules:
            if earlier.failed == failed:
                kind = "repeats" if earlier.action is action else "contradicts"
                raise ValueError(f"{where} {rule.text} {kind} {earlier.text}: the same networks")
            pair = {earlier.action: earlier, rule.action: rule}  # one of each, or a single action
            fence, refuse = pair.get(Action.FENCE), pair.get(Action.REFUSE)
            if fence is not None and refuse is not None and fence.failed <= refuse.failed:
                raise ValueError(f"{where} {rule.text} contradicts {earlier.text}: a node failed"
                                 f" on {'+'.join(sorted(refuse.failed))} would match both")
        rules.append(rule)
    return Policy(configured, tuple(rules))


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def judge(policy: Policy, views: Mapping[str, NetworkView]) -> Judgement:
    """The verdict of ``policy`` on a node seen as ``views`` (network → view); a configured
    network missing from ``views`` (or given something not a NetworkView) counts as UNKNOWN,
    networks not configured are ignored.
    """
    seen = {name: views.get(name, NetworkView.UNKNOWN) for name in policy.networks}
    seen = {name: view if isinstance(view, NetworkView) else NetworkView.UNKNOWN
            for name, view in seen.items()}
    shown = views_text(seen)
    failed = {name for name in policy.networks if seen[name] is NetworkView.FAILED}
    unknown = [name for name in policy.networks if seen[name] is NetworkView.UNKNOWN]

    def verdict(what: Verdict, why: str, rule: Rule | None = None) -> Judgement:
        return Judgement(what, f"{shown}: {why}", seen, rule.text if rule else None)

    for rule in policy.rules:
        if rule.action is Action.REFUSE and failed == rule.failed and not unknown:
            lost = [name for name in policy.networks if name in rule.failed]
            return verdict(Verdict.REFUSE,
                           f"only {_listed(lost)} {'is' if len(lost) == 1 else 'are'} lost;"
                           f" refusing (partition_policy rule {rule.text})", rule)
    fences = [rule for rule in policy.rules if rule.action is Action.FENCE and rule.failed <= failed]
    if fences:
        # the rule naming most networks says most ("*" over "storage" when all are failed);
        # max() keeps the first written of equals
        rule = max(fences, key=lambda rule: len(rule.failed))
        what = ("failed on every network" if rule.failed == set(policy.networks)
                else f"failed on {_listed(n for n in policy.networks if n in rule.failed)}")
        return verdict(Verdict.FENCE, f"{what}; fencing (partition_policy rule {rule.text})", rule)
    if len(unknown) == len(policy.networks):
        return verdict(Verdict.NO_OPINION, "no network gives a view; no opinion")
    for rule in policy.rules:
        if rule.action is Action.REFUSE and failed == rule.failed:
            # held back only by views not known (else it matched above): say which, it is
            # where the operator looks next
            return verdict(Verdict.NO_OPINION,
                           f"rule {rule.text} would refuse but needs {_listed(unknown)} seen alive;"
                           " no opinion")
    return verdict(Verdict.NO_OPINION, "no partition_policy rule matches; no opinion")
