"""Writes examples/vault/: the sample vault shipped for demos and tests (run once; output committed).

A fictional person (Sam, a software lead who runs, reads and is learning the guitar) keeps daily notes
from August to October 2026 plus project, reading and decision notes. All personal data is fake.
Re-running rewrites the same bytes: the content is fixed and the only randomness is seeded.
(Long because it is mostly the vault's text.)
"""
from __future__ import annotations

import random
import shutil
from datetime import date, timedelta
from pathlib import Path

VAULT = Path(__file__).resolve().parent / "vault"

SUMMARIES = [
    "Long planning meeting in the morning, then a quiet afternoon refactoring the ingestion service.",
    "Ran 8 km before work. Shipped the search fix. Dinner with Maya and Jonas.",
    "Sprint review went fine. Guitar practice for 30 minutes, finally got the F chord clean.",
    "Rainy day, worked from home. Spent most of it on the incident write-up.",
    "Two interviews for the backend role, a 1:1 with Priya, groceries, early night.",
    "Onboarded the new contractor, paired on the billing bug, read on the train home.",
    "Offsite with the platform team. Too many slides, but good conversations at lunch.",
    "Slow start. Cleared the inbox, reviewed three PRs, long walk by the canal.",
    "Deploy freeze day. Wrote docs, fixed flaky tests, called my parents.",
    "Half day off. Bike repair, bookshop, cooked dal for the week.",
]

LOGS = [
    ["09:00 standup", "10:30 design review for the queue migration", "14:00 dentist", "18:30 gym"],
    ["Reviewed PR #412", "Merged the config cleanup", "Lunch at the Thai place", "Answered support tickets"],
    ["Ran 6.2 km, 31:40", "Groceries: oats, lentils, coffee", "Fixed the CI cache key"],
    ["Call with the vendor about the SLA", "Updated the roadmap doc", "Laundry"],
    ["Paired with Leo on the parser", "Wrote the weekly update", "Guitar 20 min"],
]

TASKS = [
    ["[ ] book the train to Lyon", "[x] renew passport photos", "[ ] reply to Anna about the garden"],
    ["[x] send the invoice", "[ ] fix the bike light", "[ ] order the book for Leo's birthday"],
    ["[ ] schedule the retro", "[x] water the plants", "[ ] back up the laptop"],
]

# Evening reflections written under "## Reflection" (each used once).
SECTION_REFLECTIONS = [
    "The planning meeting ran long because nobody owned the agenda. Next time I will send three questions the day before, so we spend the hour deciding instead of discovering.",
    "I was short with Jonas during the review and it was not about his code. I was tired and I let the deadline speak for me. Tomorrow I want to tell him that plainly.",
    "Running before work changes the whole day. The first hour is slower, but I make fewer sloppy decisions in the afternoon and I do not reach for my phone as much.",
    "The incident write-up was harder than the incident. Writing down what we believed at each minute showed how long we trusted a dashboard that was already lying to us.",
    "Interviewing two people in one day taught me more about our team than about them. We still cannot explain in one sentence what good looks like for this role.",
    "Pairing with the contractor was slow and worth it. Explaining the billing model out loud, I found two assumptions I had never written down anywhere.",
    "The offsite slides were forgettable, the lunch was not. People say the real thing when nobody is presenting. Maybe the agenda should be mostly lunch.",
    "A slow day is not a wasted day. Clearing small things made room to notice that I have been avoiding the migration plan because I am not sure it is right.",
    "Calling my parents reminded me how much of my impatience is borrowed from work. They asked simple questions and I answered like it was a status meeting.",
    "Fixing the bike myself took three hours and a video, and I enjoyed every minute. I miss work where the result is right there in my hands.",
    "The F chord finally rang clean after two weeks of buzzing. Nothing changed except that I stopped pressing harder and started placing my finger better.",
    "Saying no to the extra project felt rude in the moment and like relief an hour later. The discomfort lasts minutes; the overload would have lasted months.",
    "The review went well because the demo was small. Every time we show one finished thing instead of five half things, the questions get better.",
    "I spent the morning polishing a document nobody asked for. Perfectionism is often just fear that looks productive from the outside.",
    "Priya pushed back on my estimate and she was right. I keep estimating the work I would do alone, not the work the team does together with reviews and waiting.",
    "Long walk by the canal without headphones. The answer to the cache problem arrived somewhere near the bridge, not at my desk.",
    "We shipped the search fix and nobody noticed, which is exactly what a good fix looks like. I need to stop expecting applause for removing pain.",
    "I wrote the docs I had postponed for a month and it took ninety minutes. The dread was far bigger than the task, again.",
    "Cooking for the week on Sunday saves more than time. It removes forty small decisions from tired evenings, and tired evenings are where my habits break.",
    "The flaky tests were not flaky; they were honest about a race we did not want to see. Calling them flaky was a way of not looking.",
    "Leo asked why we do code review at all. My first answer was defensive. The better answer is that review is how knowledge leaves one head and reaches another.",
    "Today felt scattered until I wrote down the three things that mattered. Once they were on paper the rest stopped shouting.",
    "I noticed I interrupt people more when I already think I know the answer. Letting Maya finish her point changed my mind about the rollout order.",
    "The vendor call was tense, but the contract is clear once you read it slowly. I was negotiating against my assumptions rather than against them.",
    "A quiet weekend with no plans left me more rested than the trip last month. Rest is not a reward for finishing; it is part of doing the work well.",
    "The migration dry run failed in a boring way, which is the best way to fail. Boring failures are cheap; surprising ones arrive on Friday nights.",
    "Reading on the train instead of scrolling made the commute feel like my own time again. Small defaults shape the week more than big resolutions.",
    "I apologised to Jonas for the review comment. He had already forgotten it; I had carried it for two days. Most of my guilt is a private event.",
    "Giving the demo to the sales team showed me how much jargon we use. If I cannot explain the feature to them, I do not fully understand it either.",
    "The retro was honest for the first time in months. What changed was that I went first and admitted my own mistake with the estimates.",
]

# Paragraphs elsewhere in the day that reflect by their phrasing.
PATTERN_REFLECTIONS = [
    "I think the team trusts the process more than the people right now, and that is backwards.",
    "I realize I have been measuring my weeks by tickets closed instead of problems solved.",
    "Looking back at the quarter, the best decision was the one we almost did not make: cutting scope in week two.",
    "On one hand the rewrite would clear years of debt, on the other hand it would freeze features for a whole quarter.",
    "What if the weekly update were written by whoever learned the most that week instead of by me?",
    "I think my running pace improved because I stopped chasing pace and started chasing consistency.",
    "I realize that most of my stress this month came from one unanswered email I kept postponing.",
    "Looking back, the hardest conversations this year were also the ones that fixed the most.",
    "I wonder whether the roadmap is a plan or a wish list we are too polite to call one.",
    "I think good documentation is an act of kindness toward a tired stranger, and often that stranger is me.",
    "In hindsight the outage was a gift: it forced us to write the runbook we had postponed for a year.",
    "I learned that asking for help early looks like weakness only to me; everyone else sees it as speed.",
    "What if I treated guitar practice like running, short and daily, instead of long and occasional?",
    "I noticed that my best ideas come on walks, and my worst decisions come after 9 pm.",
    "Ultimately decided to move the migration to January, when the team is rested and traffic is low.",
    "I realize that saying yes to everything is a way of never choosing what matters.",
    "Looking back at my first year as a lead, I wish I had spent less time coding and more time listening.",
    "I think the reason the meeting works is that it ends five minutes early and everyone knows it will.",
]

# The same thought re-written on a later day: near-duplicates curation must drop.
NEAR_DUPLICATES = [
    ("I realize that most of my stress this month came from one unanswered email I kept postponing.",
     "I realize that most of my stress this month came from one unanswered email that I kept on postponing."),
    ("I think good documentation is an act of kindness toward a tired stranger, and often that stranger is me.",
     "I think good documentation is an act of kindness towards a tired stranger, and often that stranger is me!"),
    ("I noticed that my best ideas come on walks, and my worst decisions come after 9 pm.",
     "I noticed again that my best ideas come on walks and my worst decisions come after 9 pm."),
]

INLINE_TAGGED = [
    "Meetings without a written question drift. #insight",
    "Ship the smallest change that teaches us something, then decide. #learning",
    "#takeaway Energy management beats time management for me: protect the mornings.",
    "Estimates are conversations, not promises; I keep forgetting that under pressure. #realization",
    "The team moves faster when I decide quickly and revisit openly. #decision",
    "Our on-call pain is mostly alert noise, not real incidents: 70% of pages last month needed no action. #analysis",
]


def daily_note(d: date, i: int, rng: random.Random) -> str:
    tags = ["journal"] + (["reflection"] if i % 4 == 0 else [])
    parts = [f"---\ndate: {d.isoformat()}\ntags: [{', '.join(tags)}]\nmood: {rng.choice(['ok', 'good', 'tired', 'great'])}\n---\n",
             f"# {d.isoformat()}\n", "## Day in short\n", SUMMARIES[i % len(SUMMARIES)] + "\n",
             "## Log\n", "".join(f"- {x}\n" for x in LOGS[i % len(LOGS)])]
    if i % 3 == 0:
        parts += ["## Tasks\n", "".join(f"- {x}\n" for x in TASKS[i % len(TASKS)])]
    if i < len(SECTION_REFLECTIONS):
        parts += ["## Reflection\n", SECTION_REFLECTIONS[i] + "\n"]
        if i % 5 == 0:
            parts.append(f"\nSee also [[Projects/Queue migration|the migration notes]] ^r{i:03d}x\n")
    if i < len(PATTERN_REFLECTIONS):
        parts += ["## Notes\n", PATTERN_REFLECTIONS[i] + "\n"]
    if i % 7 == 3 and i // 7 < len(INLINE_TAGGED):
        parts += ["\n- " + INLINE_TAGGED[i // 7] + "\n"]
    if i % 11 == 5:
        parts.append("\n![[attachments/whiteboard.png]]\n")
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


STATIC_NOTES = {
    "Projects/Queue migration.md": """---
title: Queue migration
tags: [project, work]
status: active
---
# Queue migration

Moving the job queue from the homegrown Postgres table to a managed broker.

## Status
| Phase | Owner | Done |
|-------|-------|------|
| Dry run | Sam | yes |
| Cutover | Priya | no |

## Decisions
- Ultimately decided to keep the Postgres table as a fallback for one release, because rollback must be one config flag, not a deploy.
- We chose at-least-once delivery and idempotent consumers; exactly-once was a promise no vendor could keep in writing. #decision

## Insights
The dry run showed that 40% of our jobs are retries of jobs that never needed retrying. Fixing the retry policy may matter more than the broker itself.

> [!note] Reminder
> I think the cutover checklist should be written by the person who has never done a cutover, because they will ask the questions we skip.

%% Draft thought, not ready: maybe #insight the broker is a distraction from the real retry problem. %%

Contact for the vendor: support lead Dana, dana.whitfield@brokerco.example, +44 20 7946 0958.

Code sample, not a reflection:

```python
# #insight inside code must never be extracted
retry_policy = {"max_attempts": 3}  # I think this is fine
```

The `#learning` tag inside inline code is not a tag.
""",
    "Projects/Home server.md": """---
title: Home server
tags: [project, home]
---
# Home server

Setup notes for the small server in the closet.

- Ubuntu 24.04, 2 TB mirror
- Backups nightly to the external drive
- Admin panel: https://nas.home.example/login?user=sam&token=f8Kq29XzLm71Pq0aTr55 (rotate this!)

## Lessons learned
I learned that a backup you have never restored is only a hope. The first restore test took four hours and found a missing folder.

Keeping the setup boring (one distro, one filesystem, one script) is the whole reason it still runs after two years.

I realize I pasted the admin link https://nas.home.example/login?user=sam&token=f8Kq29XzLm71Pq0aTr55 into three different chats this year; the token belongs in the password manager, not in my history.

## Lessons learned later
I learned the hard way that secrets do not belong in notes: the old DNS key sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c sat in this file for a year.

## Config
API key for the DNS provider, to be moved into the password manager: sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c
""",
    "Reading/Thinking in Systems.md": """---
title: Thinking in Systems
author: Donella Meadows
tags: [reading, book]
---
# Thinking in Systems

Finished it on the train. Notes below.

## Quotes
> "You think that because you understand 'one' that you must therefore understand 'two' because one and one make two. But you forget that you must also understand 'and'."

## Takeaways
- Delays in feedback loops cause oscillation: our hiring freeze and hiring spree are one system with a long delay. #takeaway
- The leverage points people reach for first (parameters, budgets, headcount) are the weakest ones; goals and rules are stronger.
- I realize our on-call rotation is a system whose goal, as actually rewarded, is silence rather than reliability.

## Reflection
Reading this made me see the incident backlog differently. We keep adding people to the queue, and the queue keeps growing, because the inflow is set by how many alerts we create, not by how many people read them.
""",
    "Reading/The Courage to Be Disliked.md": """---
title: The Courage to Be Disliked
tags: [reading, book, reflection/personal]
---
# The Courage to Be Disliked

A dialogue between a philosopher and a young man about Adlerian psychology.

The idea that stayed with me is the separation of tasks: whether someone likes my decision is their task, not mine. I have spent years carrying other people's tasks as if they were my own, and calling it responsibility.

It also argues that the past does not determine us, we use it. I am not sure I fully believe that, but it is a useful lens on my habit of explaining every choice by some old story about myself.

Chapters read: 1-5. Borrowed from the library, due back on the 30th.
""",
    "Decisions/2026-09 Team structure.md": """---
title: Team structure decision
date: 2026-09-18
tags: [decision, work]
---
# Team structure decision

## Context
The platform team grew from four to nine people in six months.

## Options
1. Keep one team with two tech leads.
2. Split into infrastructure and developer-experience teams.

## Analysis
On one hand a single team keeps on-call simple and avoids a new boundary; on the other hand nine people cannot hold one standup without it turning into a status report.

Ultimately decided to split in October, with a shared on-call rotation for the first quarter so nobody loses context overnight. #decision

## Follow-up
- [ ] announce in the all-hands
- [ ] update the ownership file
""",
    "Decisions/2026-10 Guitar teacher.md": """---
title: Guitar teacher
date: 2026-10-04
tags: [decision, personal]
---
# Guitar teacher

Practicing alone for three months got me chords but not rhythm. I think a teacher is worth the money because the feedback loop is the thing I cannot build alone. #decision/personal

I wrote to Elena at elena.ruiz.guitar@mailbox.example before I could talk myself out of it; I realize the hardest part of learning is admitting in writing that I am a beginner.
""",
    "Areas/Running.md": """---
title: Running
tags: [area, health]
---
# Running

Weekly volume target: 25 km.

| Week | km |
|------|----|
| 35 | 22 |
| 36 | 27 |

Looking back at the training log, every injury came after a week where I added more than 30% volume. The rule is boring and it works.

#learning Slow runs are where the fitness comes from; the fast ones just show it.
""",
    "Areas/Work/1-1 notes Priya.md": """---
title: 1:1 notes with Priya
tags: [work, people]
---
# 1:1 notes with Priya

- 2026-08-12: wants to lead the cutover. Agreed.
- 2026-09-02: asked for more design work, less firefighting.
- 2026-10-07: cutover plan reviewed, good questions about rollback.

I think Priya is ready to lead the cutover, and my hesitation is about my own fear of losing touch with the system, not about her readiness. <span style="color:gray">(private)</span>

Looking back, I put the team dinner on my own card 4111 1111 1111 1111 and spent a week chasing the refund; the expense policy exists to protect me too.

I think I should give Priya my number for the cutover night, 415-555-0176, and then stay out of her way.
""",
    "Inbox/Ideas.md": """# Ideas

- A tiny CLI that turns the incident timeline into a postmortem skeleton
- Ask the team which meeting they would delete first
- Write a guide: how we review code

## Insight
This heading only mentions a tag word. Below it is a plain list.

- buy batteries
- return the library book
""",
    "Inbox/Shopping list.md": """# Shopping list

- [ ] oat milk
- [ ] coffee beans
- [x] lentils
- [ ] batteries #todo
""",
    "templates/Daily template.md": """---
date: {{date}}
tags: [journal]
---
## Day in short

## Reflection
I think ... #reflection
""",
    ".obsidian/app.json": '{"alwaysUpdateLinks": true, "attachmentFolderPath": "attachments"}\n',
    ".obsidian/workspace.md": "I think this config file looks like a note but lives in .obsidian and must be skipped. #insight\n",
    "Journal/2026/09/2026-09-09 broken.md": """---
date: 2026-09-09
tags: [journal, reflection
mood: "unterminated
---
## Reflection
The frontmatter above is broken, but this reflection about learning to rest before I am exhausted still deserves to be read.
""",
}


# What the writer marked private (never in any output: tests grep FORGE_HOME for the PRIVATE-CANARY words),
# and the cases extraction must read the way a person would (heading tags, review headings, log lines,
# quotations, navigation tails, contact lines).
PRIVATE_AND_TRUST_NOTES = {
    "Private/Therapy 2026-09.md": """# Therapy, September
I think the PRIVATE-CANARY-folder worry about my father is older than his diagnosis, and I keep it from everyone.
""",
    "Journal/2026/09/2026-09-21 hospital.md": """---
date: 2026-09-21
private: true
---
## Reflection
I realize the PRIVATE-CANARY-flag visit scared me more than I let anyone at work see.
""",
    "Areas/Health.md": """---
title: Health
tags: [area, private]
---
# Health
Looking back, the PRIVATE-CANARY-tag blood test results explain the tired months better than any schedule did.
""",
    "Areas/Family.md": """---
title: Family
tags: [area, family]
---
# Family

I think calling my parents every Sunday is the one habit I never regret, even when the call is short.

I think the PRIVATE-CANARY-paragraph argument with my sister was about money, not about the holiday. #private

- Looking back, the PRIVATE-CANARY-item loan I gave Jonas should have been a gift from the start. #private
- I realize the long walks with my mother are where we actually talk, not the dinners.

## Dad's diagnosis #private
I feel the PRIVATE-CANARY-section news every morning before I am fully awake.

### What the doctor said
I wonder whether the PRIVATE-CANARY-subsection treatment plan is as certain as it sounded.

## Reflection
Family time works best without an agenda. The weekends we planned least were the ones everyone remembers.
""",
    "Journal/2026/10/2026-10-20 night shift.md": """---
date: 2026-10-20
tags: [journal]
---
## Log
- 02:10 I think the pharmacy on the corner closes earlier than the sign says.
- 03:45 I feel like the coffee machine has a personality and it is spiteful.

## Night shift thoughts #reflection
Covering the on-call night taught me how different the system feels when nobody is watching it. The alerts that matter are quiet; the noisy ones are the ones we stopped reading.

See also [[Projects/Queue migration|the migration notes]], [[Areas/Running]]

## Evening review
I feel calmer after writing the handover note than after any meeting today. Writing things down for the next person is how I stop carrying them.

- [ ] send the handover to Priya
Contact for the night desk: ops lead Ravi, +44 20 7946 0321.
""",
    "Reading/Meditations.md": """---
title: Meditations
author: Marcus Aurelius
tags: [reading, book]
---
# Meditations

> I think the happiness of your life depends upon the quality of your thoughts.
> — Marcus Aurelius

I realised, reading it on the train, that I quote stoics most when I am least calm. It struck me that the book is a private notebook, not a sermon, which is why it still works.

On the one hand the advice is simple; on the other hand I have read it three times and still forget it by Monday.
""",
}

# Secrets of the kinds issue 12 found leaking, written where people write them (bodies, headings, titles, file
# names), next to sentences full of harmless numbers that must survive redaction untouched. All fake.
PRIVACY_NOTES = {
    "Areas/Admin/Bank and accounts.md": """---
title: Bank admin, IBAN FR76 3000 6000 0112 3456 7890 189
tags: [admin]
---
# Bank and accounts

## Reflection
I think moving the rent to the new account was overdue: the landlord's IBAN is FR76 3000 6000 0112 3456 7890 189 and mine is now DE89370400440532013000, so the transfer no longer bounces every third month.

I realize I keep the card 4111 1111 1111 1111 in too many shops; one card for subscriptions would make a lost wallet a five-minute problem instead of a lost weekend.
""",
    "Areas/Admin/Server access.md": """# Server access

## Access notes
password: Tr0ub4dor&3-staging
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
DATABASE_URL=postgres://admin:s3cretPass@db.internal.example:5432/app

## Reflection
Looking back, pasting the staging password: Tr0ub4dor&3-staging and the AWS secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY into a note was the lazy choice; the connection string postgres://admin:s3cretPass@db.internal.example:5432/app belongs in the password manager, not in my journal.
I kept the old deploy key here too, which says everything about how I treat "temporary":
-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDx1kYk3vJ0dZ0x9Lr5Yb8Q2nC5dW3mV4pX7sT9aK6fRgAAAJgq0Xo7KtF6
-----END OPENSSH PRIVATE KEY-----
The tokens ghp_abcdefghijklmnopqrstuvwxyz0123456789 and xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx go into the rotation list tomorrow.
""",
    "Journal/2026/09/2026-09-21 calls.md": """# Calls

## Call with claire.martin@example.fr about the move
I think calling Claire on 06 12 34 56 78 instead of texting saved us a week of back-and-forth, and Tom in London (07911 123456, or +44 7911 123456 from abroad) said the same about his team.

## Paperwork
I realize the old tax form with my SSN 536-22-8726 should have been shredded years ago; keeping paper "just in case" is how private things end up in the wrong box.
""",
    "Inbox/Thread with maya.lee@example.org.md": """## Reflection
Looking back, the long thread with Maya was really one question asked five ways; I should have called her on the second reply instead of writing a sixth paragraph.
""",
    "Areas/Numbers that are not secrets.md": """## Reflection
I think between 2024 2025 2026 the numbers 1000 2000 3000 grew faster than my attention did. Invoice 2026-0042-117 was paid on 2026-03-14 at 10:30, order 1234 5678 9012 3456 arrived on time, and version 1.13.28 shipped before lunch; none of those numbers needed me.
""",
}


def main() -> None:
    if VAULT.exists():
        shutil.rmtree(VAULT)
    rng = random.Random(7)
    i, d = 0, date(2026, 8, 1)
    days = []
    while d <= date(2026, 10, 31):
        if rng.random() < 0.62:
            days.append(d)
        d += timedelta(days=1)
    dup_days = {}
    for d in days:
        text = daily_note(d, i, rng)
        path = VAULT / "Journal" / f"{d:%Y}" / f"{d:%m}" / f"{d.isoformat()}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        dup_days[i] = path
        i += 1
    # Re-written thoughts on later days, appended to later notes.
    for n, (_, rewritten) in enumerate(NEAR_DUPLICATES):
        path = dup_days[len(days) - 1 - n * 3]
        path.write_text(path.read_text(encoding="utf-8") + "\n## Thought again\n" + rewritten + "\n", encoding="utf-8")
    # An exact duplicate copied into another note.
    extra = VAULT / "Journal" / "2026" / "10" / "2026-10-31 evening.md"
    extra.write_text("## Evening\n" + SECTION_REFLECTIONS[2] + " #reflection\n", encoding="utf-8")
    for rel, text in STATIC_NOTES.items():
        p = VAULT / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    for rel, text in PRIVATE_AND_TRUST_NOTES.items():
        p = VAULT / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    for rel, text in PRIVACY_NOTES.items():
        p = VAULT / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    # Invalid UTF-8 (a Latin-1 export) and an attachment.
    bad = VAULT / "Journal" / "2026" / "08" / "2026-08-15 latin1 export.md"
    bad.write_bytes("## Reflection\nI think the caf\xe9 near the office is where I write best.\n".encode("latin-1"))
    att = VAULT / "attachments" / "whiteboard.png"
    att.parent.mkdir(parents=True, exist_ok=True)
    att.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    print(f"wrote {sum(1 for p in VAULT.rglob('*') if p.is_file())} files, {len(days)} daily notes, to {VAULT}")


if __name__ == "__main__":
    main()
