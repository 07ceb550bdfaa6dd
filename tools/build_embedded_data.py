"""Rebuilds gemma_tasks/data/*.jsonl.gz from the raw corpora (run by maintainers, not at run time).

    python tools/build_embedded_data.py --raw_dir ../shared/data

Splits are deterministic functions of stable keys (a SHA-256 of the key), so re-running gives
byte-identical files:
  * LibreOffice help: split BY HELP FILE (the part of `id` before '#'): no file is in two splits.
  * TriviaQA-open: the official dev split -> train/validation (by question), test -> test.
  * bsdgames quiz: by question; Python-docs prose is copied as it is. Two more files come from
    its training questions: `quiz_facts.train`, each training fact said in three statements
    (the text a closed-book model reads its facts in), and `quiz_qa.reworded`, the same facts
    asked in words no training example uses (what the model learned, not what it can guess).
  * gettext pairs: copied, except those whose English is a paragraph of the LibreOffice
    validation or test split (the LibreOffice UI catalog shares ~10% of those paragraphs, e.g.
    extended tips: a model trained on gettext would otherwise have seen their translations).
"""
import argparse
import collections
import gzip
import hashlib
import io
import json
import os
import re

OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "gemma_tasks", "data")


def bucket(key: str) -> int:
  """A stable number in [0, 1000) for `key`."""
  return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 1000


def read_jsonl(path):
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def same_text(text: str) -> str:
  """`text` with its whitespace collapsed: the key under which two strings are the same text."""
  return " ".join(text.split())


def write_gz(path, text: str):
  # mtime=0 and no file name in the header: the output depends only on its content.
  buf = io.BytesIO()
  with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
    f.write(text.encode("utf-8"))
  with open(path, "wb") as f:
    f.write(buf.getvalue())


def write_jsonl(path, rows):
  write_gz(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return len(rows)


# Question pattern of each quiz table -> three statements of its fact ({a}: the answer, always
# last, as in the question's answer) and a rewording of the question. Every question must match
# one pattern: a new table fails the build rather than being left out.
QUIZ_PATTERNS = (
    (r"What is the (capital|chemical symbol|atomic number) of (.+)\?",
     ("The {1} of {2} is {a}.", "{2} has the {1} {a}.", "As for {2}, its {1} is {a}."),
     "Name the {1} of {2}."),
    (r"What is the collective noun for a group of (.+)\?",
     ("The collective noun for a group of {1} is {a}.", "A group of {1} is called a {a}.",
      "Speaking of {1}, a group of them is a {a}."),
     "A group of {1} is called what?"),
    (r"What is a baby (.+) called\?",
     ("The name for a baby {1} is {a}.", "A baby {1} is called a {a}.",
      "Speaking of the {1}, its baby is a {a}."),
     "What do you call a baby {1}?"),
    (r"What is the female counterpart of (.+)\?",
     ("The female counterpart of {1} is {a}.", "The female of {1} is called {a}.",
      "Speaking of {1}, the female is {a}."),
     "Name the female counterpart of {1}."),
    (r'What does the Latin phrase (".+") mean\?',
     ("The Latin phrase {1} means {a}.", "In Latin, {1} means {a}.",
      "Translated from Latin, {1} is {a}."),
     "Translate the Latin {1} into English."),
    (r"In the language of flowers, what does (.+) mean\?",
     ("In the language of flowers, {1} means {a}.", "{1}, in the language of flowers, means {a}.",
      "The flower {1} stands for {a}."),
     "What does {1} stand for in the language of flowers?"),
    (r"Who killed (.+)\?",
     ("{1} was killed by {a}.", "The killer of {1} was {a}.", "Speaking of {1}, the killer was {a}."),
     "Who was the killer of {1}?"),
    (r"Which (US president|English sovereign) succeeded (.+)\?",
     ("{2} was succeeded as {1} by {a}.", "The {1} after {2} was {a}.",
      "After {2}, the next {1} was {a}."),
     "Who was the {1} after {2}?"),
    (r'Who wrote the poem containing the line (".+")\?',
     ("The poem containing the line {1} was written by {a}.", "The line {1} is from a poem by {a}.",
      "The poet who wrote {1} is {a}."),
     "Name the poet who wrote the line {1}."),
    (r'Which Shakespeare play contains the line (".+")\?',
     ("The line {1} is from the Shakespeare play {a}.", "Shakespeare wrote {1} in {a}.",
      "The play with the line {1} is {a}."),
     "In which Shakespeare play is the line {1}?"),
    (r"Which US state or region has telephone area code (.+)\?",
     ("Telephone area code {1} is in {a}.", "The area code {1} belongs to {a}.",
      "Phone numbers with area code {1} are in {a}."),
     "Telephone area code {1} is in which US state or region?"),
    (r"Star Trek: what is (.+)\?",
     ("Star Trek: {1} is {a}.", "In Star Trek, {1} is {a}.", "On Star Trek, {1} was {a}."),
     "In Star Trek, what is {1}?"),
)


def quiz_rewritten(question: str, answer: str):
  """(the three statements of a quiz question's fact, the question in other words).

  >>> statements, reworded = quiz_rewritten("What is the capital of Algeria?", "Algiers")
  >>> statements
  ['The capital of Algeria is Algiers.', 'Algeria has the capital Algiers.', 'As for Algeria, its capital is Algiers.']
  >>> reworded
  'Name the capital of Algeria.'
  >>> quiz_rewritten("Which US president succeeded John Adams?", "Jefferson")[1]
  'Who was the US president after John Adams?'
  """
  for pattern, statements, reworded in QUIZ_PATTERNS:
    m = re.fullmatch(pattern, question)
    if m:
      return [t.format(None, *m.groups(), a=answer) for t in statements], reworded.format(
          None, *m.groups())
  raise ValueError(f"quiz question matches no pattern of QUIZ_PATTERNS: {question!r}")


def split_rows(rows, key_fn, val_permille, test_permille):
  splits = collections.defaultdict(list)
  for r in rows:
    b = bucket(key_fn(r))
    name = "test" if b < test_permille else (
        "validation" if b < test_permille + val_permille else "train")
    splits[name].append(r)
  return splits


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--raw_dir", required=True)
  args = p.parse_args()
  os.makedirs(OUT_DIR, exist_ok=True)
  counts = {}

  lo = read_jsonl(os.path.join(args.raw_dir, "libreoffice_help_en_de.jsonl.gz"))
  splits = split_rows(lo, lambda r: r["id"].split("#")[0], val_permille=50, test_permille=50)
  for name, rows in splits.items():
    counts[f"libreoffice_en_de.{name}"] = write_jsonl(
        os.path.join(OUT_DIR, f"libreoffice_en_de.{name}.jsonl.gz"), rows)
  files = {n: {r["id"].split("#")[0] for r in rows} for n, rows in splits.items()}
  assert not (files["train"] & files["validation"] or files["train"] & files["test"]
              or files["validation"] & files["test"])
  counts.update({f"libreoffice_en_de.{n}.help_files": len(f) for n, f in files.items()})

  dev = read_jsonl(os.path.join(args.raw_dir, "qa_trivia_dev.jsonl.gz"))
  dsplit = split_rows(dev, lambda r: r["question"], val_permille=150, test_permille=0)
  counts["trivia_qa_open.train"] = write_jsonl(os.path.join(OUT_DIR, "trivia_qa_open.train.jsonl.gz"), dsplit["train"])
  counts["trivia_qa_open.validation"] = write_jsonl(
      os.path.join(OUT_DIR, "trivia_qa_open.validation.jsonl.gz"), dsplit["validation"])
  test = read_jsonl(os.path.join(args.raw_dir, "qa_trivia_test.jsonl.gz"))
  counts["trivia_qa_open.test"] = write_jsonl(os.path.join(OUT_DIR, "trivia_qa_open.test.jsonl.gz"), test)

  quiz = read_jsonl(os.path.join(args.raw_dir, "qa_bsdgames_quiz.jsonl.gz"))
  qsplit = split_rows(quiz, lambda r: r["question"], val_permille=100, test_permille=100)
  for name, rows in qsplit.items():
    counts[f"quiz_qa.{name}"] = write_jsonl(os.path.join(OUT_DIR, f"quiz_qa.{name}.jsonl.gz"), rows)
  # The answer in a statement is the quiz task's training target (`pick_alias`): the fact is read
  # in the words the question is answered in. TF comes with that import; this is a maintainer's
  # tool, never run by the package.
  from gemma_tasks.aliases import pick_alias  # pylint: disable=g-import-not-at-top
  facts, reworded = [], []
  for r in qsplit["train"]:
    statements, question = quiz_rewritten(r["question"], pick_alias(r["answers"]))
    facts += [{"text": t, "src": r["src"]} for t in statements]
    reworded.append({**r, "question": question})
  counts["quiz_facts.train"] = write_jsonl(os.path.join(OUT_DIR, "quiz_facts.train.jsonl.gz"), facts)
  counts["quiz_qa.reworded"] = write_jsonl(os.path.join(OUT_DIR, "quiz_qa.reworded.jsonl.gz"), reworded)

  gettext = read_jsonl(os.path.join(args.raw_dir, "gettext_en_de_sentences.jsonl.gz"))
  evaluated = {same_text(r["en"]) for n in ("validation", "test") for r in splits[n]}
  gettext = [r for r in gettext if same_text(r["en"]) not in evaluated]
  counts["gettext_en_de.train"] = write_jsonl(os.path.join(OUT_DIR, "gettext_en_de.train.jsonl.gz"), gettext)

  with gzip.open(os.path.join(args.raw_dir, "python_docs_prose.txt.gz"), "rt", encoding="utf-8") as f:
    prose = f.read()
  # Paragraphs (blank-line separated) -> JSONL {"text": ...}; split by paragraph hash.
  paras = [p.strip() for p in prose.split("\n\n") if p.strip()]
  psplit = split_rows([{"text": p} for p in paras], lambda r: r["text"], val_permille=20, test_permille=20)
  for name, rows in psplit.items():
    counts[f"python_docs.{name}"] = write_jsonl(os.path.join(OUT_DIR, f"python_docs.{name}.jsonl.gz"), rows)

  sizes_path = os.path.join(OUT_DIR, "split_sizes.json")
  with open(sizes_path) as f:   # keeps the entries of files other tools write (extract_ui_pairs)
    sizes = {**json.load(f), **counts}
  with open(sizes_path, "w") as f:
    json.dump(dict(sorted(sizes.items())), f, indent=1)
    f.write("\n")
  print(json.dumps(dict(sorted(counts.items())), indent=1))


if __name__ == "__main__":
  main()
