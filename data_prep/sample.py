"""What flows through prep: a ``Sample`` read from a source, or the ``ReadError`` an input item became
instead (a failed download, a missing caption file, unreadable metadata). Every input item becomes exactly
one of the two, so ``input == samples + errors`` per part."""

from __future__ import annotations

from dataclasses import dataclass

# what a sample's metadata may carry into its shard's .json (the loader reads these)
SHARD_META = ("lang", "tasks", "text", "messages", "captions")


@dataclass
class Sample:
    key: str
    source_id: str  # where it came from (a path, a URL, a JSON index): what errors and reports name
    image: bytes | None  # None: a text-only sample (``meta`` has "text" or "messages")
    caption: str | None  # an image's caption (None: a dataset of other tasks); the text filter cleans it
    meta: dict  # the SHARD_META keys the source gave
    # quality labels (the synthetic world's, or a user's hand labels): read for the report, never written
    noise: str | None = None  # the kind of noise this sample carries ("clean" for none)
    clean_caption: str | None = None  # the caption before noise: measures the text cleaning
    # set by the filters
    lang: str | None = None
    original_size: tuple[int, int] | None = None  # as a viewer shows it
    ext: str | None = None  # of ``image`` once fitted: jpg | png | webp
    clip_score: float | None = None

    @property
    def text(self) -> str:
        """What the text filters and the dedup key read: the caption (or, without one, the text of the
        sample's tasks), or a text-only sample's text."""
        if self.image is not None:
            return self.caption if self.caption is not None else _task_text(self.meta.get("tasks") or {})
        if self.meta.get("text"):
            return self.meta["text"]
        return "\n".join(_message_text(m) for m in self.meta.get("messages", []))


@dataclass(frozen=True)
class ReadError:
    source_id: str
    kind: str  # the countable reason (http_404, missing_caption, bad_metadata, ...)
    detail: str  # one line naming the file or URL


def labelled(key: str, source_id: str, image: bytes | None, caption: str | None, meta: dict) -> Sample:
    """A sample from a source's metadata: the shard keys kept, the quality labels taken out."""
    meta = meta if isinstance(meta, dict) else {}
    noise, clean = meta.get("noise"), meta.get("clean_caption")
    return Sample(key, source_id, image, caption, {k: meta[k] for k in SHARD_META if k in meta},
                  noise=noise if isinstance(noise, str) else None,
                  clean_caption=clean if isinstance(clean, str) else None)  # fmt: skip


def text_only(meta: dict, source_id: str, key: str) -> Sample | ReadError:
    if not isinstance(meta, dict) or not (meta.get("text") or meta.get("messages")):
        return ReadError(source_id, "missing_image", f"{source_id}: no image and no 'text' or 'messages'")
    return labelled(key, source_id, None, None, {k: v for k, v in meta.items() if k != "tasks"})


def sample_key(part: int, position: int) -> str:
    return f"{part:06d}{position:06d}"  # no dots: webdataset splits a file name at its first dot


def _task_text(tasks: dict) -> str:
    """The words of a sample's ground truth (questions, answers, expressions, captions, dialogue)."""
    lines = []
    for task, value in tasks.items():
        if task == "dialogue":
            lines += [_message_text(m) for m in value if isinstance(m, dict)]
        elif isinstance(value, str):
            lines.append(value)
        elif isinstance(value, list):
            keys = ("question", "answer", "expression", "text")
            lines += [str(item[k]) for item in value if isinstance(item, dict) for k in keys if k in item]
    return "\n".join(lines)


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
