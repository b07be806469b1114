"""The one rule for a person's name (what an operator enrols, names a visitor as, or renames to), applied by the CLI
enrolment, the dashboard's actions and, as the last line of defence, the store itself.

A person's name is 1..MAX_PERSON_NAME_LEN characters, none of them a control, format (zero-width), line or paragraph
separator, private-use, surrogate or unassigned character (Unicode categories Cc, Cf, Zl, Zp, Co, Cs, Cn), with no
space at either end, and is not a visitor id (``visitor-N``, in any case): those are minted by the store, and a
person called that would be confused with (and survive the forget of) the visitor.
"""

from __future__ import annotations

import unicodedata

from shared.errors import NameRuleError

MAX_PERSON_NAME_LEN = 200
VISITOR_PREFIX = "visitor"
FORBIDDEN_CATEGORIES = {"Cc": "a control character", "Cf": "a format (invisible) character",
                        "Zl": "a line separator", "Zp": "a paragraph separator", "Co": "a private-use character",
                        "Cs": "a surrogate", "Cn": "an unassigned character"}
PERSON_NAME_RULE = (f"1..{MAX_PERSON_NAME_LEN} printable characters (no control, zero-width or other invisible "
                    "characters), no space at either end, and not a visitor id (visitor-N)")


def is_visitor_name(name: str) -> bool:
    """``visitor-N`` names are minted by the store; an enrolled person can never be called that."""
    prefix, _, number = name.partition("-")
    return prefix == VISITOR_PREFIX and number.isdigit()


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid person's name, in words; None when it is."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not 1 <= len(name) <= MAX_PERSON_NAME_LEN:
        return f"expected 1..{MAX_PERSON_NAME_LEN} characters, got {len(name)}"
    if name != name.strip():
        return "it starts or ends with a space"
    for position, char in enumerate(name):
        category = unicodedata.category(char)
        if category in FORBIDDEN_CATEGORIES:
            return f"character {position + 1} (U+{ord(char):04X}) is {FORBIDDEN_CATEGORIES[category]}"
    if is_visitor_name(name.casefold()):
        return "it is a visitor id (visitor-N): those are minted by the store for people nobody enrolled"
    return None


def check_person_name(name: object) -> str:
    """``name`` when it is a valid person's name (see the module docstring); NameRuleError saying why otherwise."""
    problem = name_problem(name)
    if problem is not None:
        raise NameRuleError(f"{name!r} is not a valid person's name: {problem} (a name is {PERSON_NAME_RULE})")
    return str(name)
