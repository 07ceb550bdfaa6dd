"""LibreOffice help en->de paragraph pairs from the Debian help packages, for the help files
that the embedded data does NOT contain: a held-out test set (run by maintainers or users, not at
run time; nothing here is imported by the package).

    apt-get download libreoffice-help-en-us libreoffice-help-de   # 4:7.4.7-1+deb12u14
    for f in libreoffice-help-*.deb; do dpkg-deb -x "$f" x; done
    python tools/extract_help_pairs.py --help_dir x/usr/share/libreoffice/help \\
        --out /tmp/libreoffice_heldout.jsonl.gz

Pairs are aligned by paragraph id within a help file, as the embedded data is (`id` =
`<html file>#<paragraph id>`): the text of every `<p>`/`<h1..6>` whose id starts with `par_id`,
`hd_id` or `bm_id`, tags stripped and whitespace collapsed, kept when both languages have text.
Held out means unseen: pairs whose English equals the German (code, numbers, names) are left
out as the embedded data leaves them out, and so is every paragraph whose English text occurs
anywhere in the embedded data ("Parameters:", "Click OK to apply the changes."), LibreOffice
pairs and UI messages (gettext pairs, LibreOffice UI strings) alike, or earlier in the held-out
files.
`--check` re-extracts the help files that ARE embedded and prints how many embedded pairs come
out identical, which validates the extraction before it is used on the others.
"""
import argparse
import collections
import gzip
import html.parser
import json
import os
import re
import sys

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "gemma_tasks", "data")
SPLITS = ("train", "validation", "test")
_ID = re.compile(r"^(par|hd|bm)_id")
_TEXT_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}


class _Paragraphs(html.parser.HTMLParser):
  """{paragraph id: text} of one help page."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.texts = {}
    self._open = []   # [tag, id, parts] of the id'd elements being read (innermost last)

  def handle_starttag(self, tag, attrs):
    pid = dict(attrs).get("id") or ""
    if tag in _TEXT_TAGS and _ID.match(pid):
      self._open.append([tag, pid, []])

  def handle_endtag(self, tag):
    if self._open and self._open[-1][0] == tag:
      _, pid, parts = self._open.pop()
      text = " ".join("".join(parts).split())
      if text and pid not in self.texts:
        self.texts[pid] = text
      if self._open:   # a nested paragraph's text is also its parent's
        self._open[-1][2].extend(parts)

  def handle_data(self, data):
    if self._open:
      self._open[-1][2].append(data)


def paragraphs(path: str) -> dict:
  parser = _Paragraphs()
  with open(path, encoding="utf-8") as f:
    parser.feed(f.read())
  return parser.texts


def pairs(help_dir: str, rel_path: str):
  """[{id, en, de}] of one help file, in the English page's order."""
  en = paragraphs(os.path.join(help_dir, "en-US", rel_path))
  de_path = os.path.join(help_dir, "de", rel_path)
  de = paragraphs(de_path) if os.path.exists(de_path) else {}
  return [{"id": f"{rel_path}#{pid}", "en": text, "de": de[pid]}
          for pid, text in en.items() if pid in de]


def help_files(help_dir: str):
  root = os.path.join(help_dir, "en-US")
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files
                if f.endswith(".html") and d != root)


def embedded_pairs():
  rows = []
  for split in SPLITS:
    with gzip.open(os.path.join(DATA_DIR, f"libreoffice_en_de.{split}.jsonl.gz"), "rt",
                   encoding="utf-8") as f:
      rows.extend(json.loads(line) for line in f)
  return rows


def embedded_gettext_sources() -> set:
  """The English of the embedded UI messages (the gettext pairs and the LibreOffice UI strings;
  some of them are help paragraphs too)."""
  english = set()
  for name in ("gettext_en_de.train", "libreoffice_ui_en_de.train"):
    with gzip.open(os.path.join(DATA_DIR, f"{name}.jsonl.gz"), "rt", encoding="utf-8") as f:
      english.update(json.loads(line)["en"] for line in f)
  return english


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--help_dir", required=True,
                 help="usr/share/libreoffice/help of the unpacked packages (has en-US/ and de/)")
  p.add_argument("--out", help="jsonl.gz of the pairs of the help files not in the embedded data")
  p.add_argument("--check", action="store_true",
                 help="re-extract the embedded help files and compare with the embedded pairs")
  args = p.parse_args(argv)
  embedded = embedded_pairs()
  embedded_files = {r["id"].split("#")[0] for r in embedded}
  files = help_files(args.help_dir)
  if args.check:
    by_file = collections.defaultdict(list)
    for rel in sorted(embedded_files):
      if os.path.exists(os.path.join(args.help_dir, "en-US", rel)):
        by_file[rel] = pairs(args.help_dir, rel)
    got = {(r["id"], r["en"], r["de"]) for rows in by_file.values() for r in rows}
    same = sum((r["id"], r["en"], r["de"]) in got for r in embedded)
    print(f"{same} of {len(embedded)} embedded pairs re-extracted identically "
          f"({100 * same / len(embedded):.1f}%); {len(got)} pairs extracted from those files")
  if args.out:
    outside = [f for f in files if f not in embedded_files]
    seen = {r["en"] for r in embedded} | embedded_gettext_sources()
    rows = []
    for r in (r for rel in outside for r in pairs(args.help_dir, rel)):
      if r["en"] != r["de"] and r["en"] not in seen:
        seen.add(r["en"])
        rows.append(r)
    with gzip.open(args.out, "wt", encoding="utf-8") as f:
      for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} pairs from {len(outside)} help files not in the embedded data "
          f"-> {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
