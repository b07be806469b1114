"""`argusnet models list|fetch`: the model cards and, for users with internet, downloading their files."""

from __future__ import annotations

import argparse
from pathlib import Path

from argusnet.commands.common import print_json
from gpu_worker.embed.cards import BUILTIN_CARDS, load_card
from gpu_worker.embed.fetch import default_models_dir, fetch_model


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="model cards and model files").add_subparsers(
        dest="models_command", metavar="ACTION", required=True)
    p = models.add_parser("list", help="the built-in model cards")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_list)
    p = models.add_parser("fetch", help="download a card's ONNX file, checked by sha256 (needs internet)")
    p.add_argument("card", metavar="CARD", help="a built-in card name or the path of a card YAML file")
    p.add_argument("--dest", type=Path, default=None, metavar="DIR",
                   help=f"folder to put CARD.onnx in (default: {default_models_dir()})")
    p.add_argument("--url", default=None, help="download from here instead of the card's URL")
    p.add_argument("--sha256", default=None, help="expected sha256 (default: the card's)")
    p.set_defaults(handler=cmd_fetch)


def cmd_list(args: argparse.Namespace) -> int:
    cards = [{"name": c.name, "output_dim": c.output_dim, "input_size": c.input_size, "sha256": c.sha256,
              "url": c.url} for c in BUILTIN_CARDS.values()]
    if args.json:
        print_json({"cards": cards})
        return 0
    for card in cards:
        print(f"{card['name']}: {card['output_dim']}-d, input {card['input_size']}, "
              f"sha256 {card['sha256'] or '(none published: pass --sha256)'}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    path = fetch_model(load_card(args.card), args.dest or default_models_dir(), url=args.url, sha256=args.sha256)
    print(f"{args.card}: {path}")
    print(f"use it with: embedder: {{type: onnx, card: {args.card}, path: {path}}}")
    return 0
