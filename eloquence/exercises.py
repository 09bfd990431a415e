"""The exercise registry: one small declarative entry per coaching exercise.

The universal agent (eloquence/agent.py) looks the exercise up by the `exercise_type` found in
the room or job metadata, and takes from it the instructions, the greeting, the TTS voice
context, the language, the optional tools and the optional quick replies. Adding an exercise is
one `register(Exercise(...))` call (see the README); nothing else in the application changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_EXERCISE = "default"
SUPPORTED_LANGUAGES = ("en", "fr")

# Spoken replies: the TTS reads everything, so no markdown, no lists, no emoji. "Réponds toujours en
# français": without it the local SmolLM2-135M drifted into English on French questions (measured:
# README "French").
_SPOKEN_STYLE = {
    "en": (
        "You are speaking out loud through a voice interface. Answer in one to three short "
        "sentences of plain spoken English: no lists, no markdown, no emoji. Start with a short "
        "first sentence so the user hears you quickly."
    ),
    "fr": (
        "Tu parles à voix haute à travers une interface vocale. Réponds toujours en français, en une "
        "à trois phrases courtes de français parlé simple : pas de listes, pas de markdown, pas "
        "d'emoji. Commence par une première phrase courte pour que l'utilisateur t'entende vite."
    ),
}


@dataclass(frozen=True)
class ExerciseText:
    """What the coach says and is told, in one language."""

    persona: str
    """Who the coach is and what the exercise trains (the system prompt, minus the spoken style)."""
    greeting: str
    """The first thing the agent says when the session starts."""
    quick_replies: Mapping[str, str] = field(default_factory=dict)
    """Keyword → a fixed reply said without asking the LLM, for short small talk ("merci" →
    "Avec plaisir !"); a turn of more than two words beside the keyword goes to the LLM. Off
    (empty) unless the exercise opts in."""

    def __post_init__(self) -> None:
        for keyword, reply in self.quick_replies.items():
            if not keyword.strip() or not reply.strip():
                raise ValueError(f"quick reply {keyword!r} → {reply!r}: keyword and reply must not be blank")
        object.__setattr__(self, "quick_replies", MappingProxyType(dict(self.quick_replies)))


class UnknownExerciseError(KeyError):
    """An exercise type that is not registered; carries the valid names."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.valid = list(valid)

    def __str__(self) -> str:
        return f"unknown exercise {self.name!r}; valid exercises: {', '.join(self.valid)}"


@dataclass(frozen=True)
class Exercise:
    name: str
    """The `exercise_type` clients send (snake_case)."""
    title: str
    voice_context: str
    """The azure-tts speaking context of the replies (`GET /v1/voices` lists them: coaching, ...)."""
    text: Mapping[str, ExerciseText]
    """English and French text, keyed by language code."""
    language: str = "en"
    """The language used when neither the metadata nor the settings ask for another."""
    tools: tuple[Any, ...] = ()
    """Optional `livekit.agents.function_tool`s the coach may call."""
    description: str = ""
    greeting_context: str = "greeting"
    """The speaking context of the greeting (fr-FR-DeniseNeural greets, fr-FR-HenriNeural coaches)."""

    def __post_init__(self) -> None:
        missing = [lang for lang in SUPPORTED_LANGUAGES if lang not in self.text]
        if missing:
            raise ValueError(f"exercise {self.name!r} lacks text for {', '.join(missing)}")
        object.__setattr__(self, "text", MappingProxyType(dict(self.text)))

    def resolve_language(self, language: str | None) -> str:
        """`language` if this exercise has text for it ("fr-FR" counts as "fr"), else its own default."""
        if language:
            short = language.split("-")[0].lower()
            if short in self.text:
                return short
        return self.language

    def instructions(self, language: str | None = None) -> str:
        lang = self.resolve_language(language)
        return f"{self.text[lang].persona}\n\n{_SPOKEN_STYLE[lang]}"

    def greeting(self, language: str | None = None) -> str:
        return self.text[self.resolve_language(language)].greeting

    def quick_replies(self, language: str | None = None) -> Mapping[str, str]:
        """The keyword replies in `language` (empty: every turn goes to the LLM)."""
        return self.text[self.resolve_language(language)].quick_replies


@dataclass
class ExerciseRegistry:
    _exercises: dict[str, Exercise] = field(default_factory=dict)

    def register(self, exercise: Exercise, *, replace: bool = False) -> Exercise:
        if exercise.name in self._exercises and not replace:
            raise ValueError(f"exercise {exercise.name!r} is already registered")
        self._exercises[exercise.name] = exercise
        return exercise

    def get(self, name: str) -> Exercise:
        try:
            return self._exercises[name]
        except KeyError:
            raise UnknownExerciseError(name, self.names()) from None

    def resolve(self, name: str | None) -> Exercise:
        """The named exercise, or the default one for a missing or unknown name."""
        return self._exercises.get(name or DEFAULT_EXERCISE) or self._exercises[DEFAULT_EXERCISE]

    def names(self) -> list[str]:
        return sorted(self._exercises)

    def __contains__(self, name: object) -> bool:
        return name in self._exercises

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._exercises[n] for n in self.names())


REGISTRY = ExerciseRegistry()
register = REGISTRY.register
get_exercise = REGISTRY.get
resolve_exercise = REGISTRY.resolve
exercise_names = REGISTRY.names


register(
    Exercise(
        name=DEFAULT_EXERCISE,
        title="Speaking coach",
        voice_context="coaching",
        description="Open conversation with a friendly speaking coach.",
        text={
            "en": ExerciseText(
                persona=(
                    "You are Eloquence, a warm and encouraging public-speaking coach. You help the "
                    "user speak with more clarity and confidence, give one concrete tip at a time, "
                    "and ask one short follow-up question."
                ),
                greeting="Hello! I'm your Eloquence speaking coach. What would you like to work on today?",
            ),
            "fr": ExerciseText(
                persona=(
                    "Tu es Eloquence, un coach en prise de parole chaleureux et encourageant. Tu "
                    "aides l'utilisateur à parler avec plus de clarté et d'assurance, tu donnes un "
                    "conseil concret à la fois et tu poses une courte question de relance."
                ),
                greeting=(
                    "Bonjour ! Je suis votre coach Eloquence. Sur quoi voulez-vous travailler aujourd'hui ?"
                ),
            ),
        },
    )
)

register(
    Exercise(
        name="confidence_boost",
        title="Confidence boost with Marie",
        voice_context="coaching",
        description="Marie, a confidence coach, helps the user introduce themselves and state their goals.",
        text={
            "en": ExerciseText(
                persona=(
                    "You are Marie, a kind and energetic confidence coach. The user practises "
                    "introducing themselves and talking about their goals. Acknowledge what they "
                    "did well, suggest one small improvement in posture, voice or wording, and "
                    "encourage them to try again."
                ),
                greeting=(
                    "Hello! I'm Marie, your confidence coach. "
                    "Introduce yourself and tell me about your goals."
                ),
            ),
            "fr": ExerciseText(
                persona=(
                    "Tu es Marie, une coach en confiance bienveillante et dynamique. L'utilisateur "
                    "s'entraîne à se présenter et à parler de ses objectifs. Souligne ce qu'il a "
                    "bien fait, propose une petite amélioration de posture, de voix ou de "
                    "formulation, et encourage-le à recommencer."
                ),
                greeting=(
                    "Bonjour ! Je suis Marie, votre coach en confiance. "
                    "Présentez-vous et parlez-moi de vos objectifs."
                ),
            ),
        },
    )
)

register(
    Exercise(
        name="presentation_skills",
        title="Presentation skills",
        voice_context="coaching",
        description="Rehearse a presentation: structure, opening, pace and nerves.",
        text={
            "en": ExerciseText(
                persona=(
                    "You are a presentation coach. The user rehearses a talk or asks how to present "
                    "better. Help with structure, a strong opening, pace, pauses and handling nerves. "
                    "Give one practical technique per answer."
                ),
                greeting=(
                    "Hi! Let's work on your presentation. Tell me what your talk is about, "
                    "or try your opening line."
                ),
            ),
            "fr": ExerciseText(
                persona=(
                    "Tu es un coach en présentation. L'utilisateur répète une intervention ou demande "
                    "comment mieux présenter. Aide-le sur la structure, une ouverture forte, le "
                    "rythme, les pauses et la gestion du trac. Donne une technique pratique par réponse."
                ),
                greeting=(
                    "Bonjour ! Travaillons votre présentation. Dites-moi de quoi parle votre "
                    "intervention, ou essayez votre phrase d'ouverture."
                ),
            ),
        },
    )
)

register(
    Exercise(
        name="interview_prep",
        title="Job interview practice",
        voice_context="coaching",
        description="A mock job interview: the coach asks questions and gives feedback on the answers.",
        text={
            "en": ExerciseText(
                persona=(
                    "You are a friendly recruiter running a mock job interview. Ask one interview "
                    "question at a time. After each answer, give one short piece of feedback, then "
                    "ask the next question."
                ),
                greeting=("Welcome to your practice interview. To begin, tell me a little about yourself."),
            ),
            "fr": ExerciseText(
                persona=(
                    "Tu es un recruteur bienveillant qui mène un entretien d'embauche d'entraînement. "
                    "Pose une question à la fois. Après chaque réponse, donne un court retour, puis "
                    "pose la question suivante."
                ),
                greeting=(
                    "Bienvenue à votre entretien d'entraînement. Pour commencer, parlez-moi un peu de vous."
                ),
            ),
        },
    )
)


def print_registry() -> int:
    """`eloquence exercises`: one row per registered exercise."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Eloquence exercises (exercise_type)")
    table.add_column("exercise_type", style="bold cyan", no_wrap=True)
    table.add_column("title")
    table.add_column("voice contexts")
    table.add_column("languages")
    table.add_column("tools", justify="right")
    table.add_column("greeting (en)")
    for exercise in REGISTRY:
        table.add_row(
            exercise.name,
            exercise.title,
            f"{exercise.greeting_context}, then {exercise.voice_context}",
            ", ".join(sorted(exercise.text)),
            str(len(exercise.tools)),
            exercise.greeting("en"),
        )
    Console().print(table)
    return 0
