"""A detected reflection + its note's context -> one chat example (system, user, assistant).

The user turn is written from the context a person would have in mind (the note, the section, the day's
summary); the template varies with the reflection's kind and is picked from the example's id, so the
same vault always yields the same examples.
"""
from __future__ import annotations

from forge_pipeline.extraction.detection import Reflection
from forge_pipeline.files import sha256_text

USER_TEMPLATES: dict[str, list[str]] = {
    "tag": [
        "I was writing about {topic}. What's the insight I keep coming back to?",
        "Thinking about {topic}: what did I learn?",
        "Help me put into words what {topic} taught me.",
        "What is my takeaway from {topic}?",
    ],
    "pattern": [
        "How do I see {topic} now?",
        "I keep thinking about {topic}. What's on my mind?",
        "What's my honest take on {topic}?",
        "Walk me through how I'm weighing {topic}.",
    ],
    "section": [
        "Let's reflect on {topic}. How did it go, really?",
        "Looking back on {topic}, what stands out?",
        "Time for my evening reflection on {topic}.",
        "What would I write in my reflection on {topic}?",
    ],
}


def example_id(source_file: str, section: str | None, text: str) -> str:
    """Stable across runs and machines: the same note, section and words give the same id."""
    return sha256_text(f"{source_file}\n{section or ''}\n{text}")[:16]


def describe_topic(title: str, section: str | None, date: str | None) -> str:
    if date and (title == date or title.replace("_", "-") == date):
        topic = f"my day on {date}"
    else:
        topic = f'"{title}"'
    if section and section.lower() not in {"reflection", "reflections", title.lower()}:
        topic += f" ({section})"
    return topic


def build_messages(reflection: Reflection, *, ex_id: str, title: str, date: str | None, summary: str | None,
                   system_prompt: str) -> list[dict]:
    templates = USER_TEMPLATES[reflection.kind]
    template = templates[int(ex_id, 16) % len(templates)]
    user = template.format(topic=describe_topic(title, reflection.section, date))
    if summary:
        user += f"\nContext - the day in short: {summary}"
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user},
        {"role": "assistant", "content": reflection.text},
    ]
