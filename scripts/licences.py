#!/usr/bin/env python3
"""The licences of what the daemon's binary is built from (its normal dependencies, for the
targets the packages are built for; build scripts' and tests' dependencies are not shipped).

    scripts/licences.py check            fails (exit 1) naming each crate whose licence
                                         expression allows none of ALLOWED (`make lint`)
    scripts/licences.py notice FILE      writes the third-party notice the packages ship

assume-roled is MIT OR Apache-2.0; every crate in the binary must be usable under one of the
permissive licences below, which are compatible with both. The expressions are cargo's
(SPDX, with the old "/" for OR); a crate without one (a licence file only) fails the check.
"""

import json
import os
import re
import subprocess
import sys

# Permissive licences compatible with distributing the binary under MIT or Apache-2.0.
ALLOWED = {
    "0BSD", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "BSL-1.0", "CC0-1.0", "ISC", "MIT",
    "MIT-0", "Unicode-3.0", "Unicode-DFS-2016", "Unlicense", "Zlib",
}
TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "x86_64-unknown-linux-musl"]
# Licence texts the notice can give for a crate whose source carries none (its authors as the
# copyright holders), by SPDX name; such a crate with any other licence fails the check.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = {"MIT": "LICENSE-MIT", "Apache-2.0": "LICENSE-APACHE"}
# What else the binary links besides crates.
LINKED = """Also linked into the binary:

Rust's standard library (std, core, alloc, compiler_builtins): MIT OR Apache-2.0, Copyright
The Rust Project Developers (the Rust distribution's COPYRIGHT-library lists its parts).

In the static x86_64 build only: musl libc, MIT, Copyright (c) 2005-2020 Rich Felker, et al.
(https://git.musl-libc.org/cgit/musl/tree/COPYRIGHT), and LLVM's libunwind, Apache-2.0 WITH
LLVM-exception."""


def shipped_packages():
    """Every package the daemon's binary links, for any of TARGETS, by id."""
    shipped = {}
    for target in TARGETS:
        metadata = json.loads(subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target],
            check=True, capture_output=True, text=True).stdout)
        packages = {p["id"]: p for p in metadata["packages"]}
        nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
        root = metadata["resolve"]["root"]
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            for dep in nodes[node]["deps"]:
                if any(kind["kind"] is None for kind in dep["dep_kinds"]):
                    stack.append(dep["pkg"])
        # Procedural macros run in the compiler; nothing of theirs is in the binary.
        linked = [i for i in seen if i != root and not is_proc_macro(packages[i])]
        shipped.update({i: packages[i] for i in linked})
    return sorted(shipped.values(), key=lambda p: (p["name"], p["version"]))


def is_proc_macro(package):
    return all("proc-macro" in target["kind"] for target in package["targets"])


def tokens(expression):
    return re.findall(r"\(|\)|[A-Za-z0-9.+-]+", expression.replace("/", " OR "))


def permits(expression):
    """Whether the SPDX `expression` can be satisfied with ALLOWED licences alone."""
    words = tokens(expression)
    position = 0

    def either():  # term (OR term)*
        nonlocal position
        value = both()
        while position < len(words) and words[position] == "OR":
            position += 1
            value = both() or value
        return value

    def both():  # atom (AND atom)*
        nonlocal position
        value = atom()
        while position < len(words) and words[position] == "AND":
            position += 1
            value = atom() and value
        return value

    def atom():
        nonlocal position
        word = words[position]
        position += 1
        if word == "(":
            value = either()
            position += 1  # ")"
            return value
        if position < len(words) and words[position] == "WITH":
            position += 2  # an exception only widens what the licence permits
        return word in ALLOWED

    value = either()
    if position != len(words):
        raise ValueError(f"cannot read licence expression {expression!r}")
    return value


def check():
    refused = 0
    for package in shipped_packages():
        name = f"{package['name']} {package['version']}"
        if not package["license"] or not permits(package["license"]):
            print(f"licences: {name}: {package['license'] or 'no licence expression'} allows none "
                  "of the permitted licences", file=sys.stderr)
            refused += 1
        elif not licence_texts(package) and not template_for(package):
            print(f"licences: {name}: its source has no licence text, and the notice has none for "
                  f"{package['license']}", file=sys.stderr)
            refused += 1
    return 1 if refused else 0


def template_for(package):
    """For a crate whose source has no licence file: the text of one of its licences, with its
    authors as the copyright holders; None if the notice has no text for any of them."""
    for word in tokens(package["license"]):
        if word in TEMPLATES:
            with open(os.path.join(ROOT, TEMPLATES[word]), encoding="utf-8") as text:
                body = text.read().strip()
            if word == "MIT":  # our copyright line, replaced with the crate's authors'
                holders = ", ".join(re.sub(r"\s*<[^>]*>", "", a) for a in package["authors"]) or (
                    f"the authors of {package['name']} ({package.get('repository') or 'crates.io'})")
                body = re.sub(r"Copyright \(c\) .*", lambda _: "Copyright (c) " + holders, body)
            return (word, body)
    return None


LICENCE_FILE = re.compile(r"^(licen[cs]e|copying|copyright|notice)([-_.].*)?$", re.IGNORECASE)


def licence_texts(package):
    """The licence and notice files in `package`'s source, as (path, text), by path: at its top,
    and in its vendored sources (aws-lc's third_party/, whose top-level licence refers to them),
    three levels down at most."""
    directory = os.path.dirname(package["manifest_path"])
    found = []
    for parent, folders, files in os.walk(directory):
        depth = os.path.relpath(parent, directory).count(os.sep) + (parent != directory)
        folders[:] = sorted(f for f in folders if depth < 3 and not f.startswith("."))
        for name in sorted(files):
            if LICENCE_FILE.match(name):
                path = os.path.join(parent, name)
                with open(path, encoding="utf-8", errors="replace") as text:
                    found.append((os.path.relpath(path, directory), text.read().strip()))
    return sorted(found)


def notice(path):
    """The crates with their licence expressions, then every distinct licence and notice text
    their sources carry (MIT and Apache-2.0 ask for the text and notices to go with a binary),
    each once, naming the crates it came with."""
    packages = shipped_packages()
    lines = [
        "assume-roled is distributed under MIT OR Apache-2.0 (LICENSE-MIT, LICENSE-APACHE).",
        "",
        f"Its binary is built from these {len(packages)} crates, under the licences their",
        "authors declare; the licence and notice texts of their sources follow the list.",
        "(The crates of every packaged build: x86_64 and aarch64 with glibc, x86_64 with musl.)",
        "",
    ]
    texts = {}
    for package in packages:
        crate = f"{package['name']} {package['version']}"
        source = package.get("repository") or f"https://crates.io/crates/{package['name']}"
        found = licence_texts(package)
        where = ""
        if not found:
            word, text = template_for(package)
            found = [(f"{word}, its authors as holders", text)]
            where = f"; its source has no licence file: the {word} text with its authors follows"
        lines.append(f"{crate}: {package['license']} ({source}{where})")
        for name, text in found:
            texts.setdefault(text, []).append(f"{crate} ({name})")
    lines += ["", LINKED]
    for text, crates in texts.items():
        lines += ["", "=" * 78, "Of: " + ", ".join(crates), "=" * 78, "", text]
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["check"]:
        sys.exit(check())
    if len(sys.argv) == 3 and sys.argv[1] == "notice":
        sys.exit(notice(sys.argv[2]))
    sys.exit(__doc__)
