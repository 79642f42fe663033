"""A tiny MovieLens-100K folder in either form: GroupLens' original files or the copy with header rows.

Example:
    >>> import tempfile
    >>> folder = write_ml100k(Path(tempfile.mkdtemp()) / "ml", original=True)
    >>> sorted(p.name for p in folder.iterdir())
    ['u.data', 'u.genre', 'u.item']
"""

from __future__ import annotations

from pathlib import Path

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]

# (item, title, release date, genres)
MOVIES = [(1, "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
          (2, "GoldenEye (1995)", "01-Jan-1995", ["Action", "Adventure", "Thriller"]),
          (3, "Café au lait (1994)", "01-Jan-1994", ["Comedy"]),
          (4, "Get Shorty (1995)", "01-Jan-1995", ["Action", "Comedy", "Drama"]),
          (5, "Copycat (1995)", "01-Jan-1995", ["Crime", "Drama", "Thriller"]),
          (6, "Unknown date", "", ["Drama"])]

# (user, item, rating, timestamp) in file order; user 1 rates 5 and then 2 at the same second
RATINGS = [(1, 1, 5, 10), (2, 2, 3, 5), (1, 5, 4, 20), (1, 2, 3, 20), (2, 3, 4, 6), (1, 3, 2, 30),
           (2, 1, 5, 7), (1, 4, 4, 40), (2, 6, 1, 8), (1, 6, 5, 50), (2, 4, 3, 9),
           (3, 6, 4, 1), (3, 5, 4, 2), (3, 4, 4, 3), (3, 3, 4, 3), (3, 2, 4, 4), (3, 1, 4, 5)]


def write_ml100k(folder: Path, original: bool) -> Path:
    """Write u.data and u.item (and u.genre for the original form) into `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sep = "\t" if original else "|"
    data = [] if original else ["user|item|rating|timestamp"]
    data += [sep.join(map(str, r)) for r in RATINGS]
    (folder / "u.data").write_text("\n".join(data) + "\n")
    items = [] if original else ["item|title|releaseDate|videoReleaseDate|imdbURL|" + "|".join(GENRES)]
    for item, title, date, genres in MOVIES:
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        items.append(f"{item}|{title}|{date}||http://us.imdb.com/M/title-exact?{item}|{flags}")
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    if original:
        (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    return folder
