"""Proximity rules of the prompt-injection detector, over normalised text.

Phrase lists only catch the word orders someone wrote down; attacks vary them
("ignore any previous and following instructions", "ignorez toutes les instructions
précédentes"). These rules look for an intent verb and its object within a few
words of each other, in the major languages, on `normalize(text)` (lower case,
accents stripped, single spaces). Each rule is (family, rule, weight, pattern).
"""

from __future__ import annotations

import re

_GAP = r"(?: [^ ]+){0,%d} "


def _alt(words: str) -> str:
    return "(?:" + "|".join(w.strip() for w in words.split("|")) + ")"


OVERRIDE_VERBS = _alt(
    "ignore|ignoring|disregard|disregarding|forget|skip|override|overwrite|bypass|discard|"
    "abandon|neglect|drop|circumvent|ignoriere|ignorieren|ignoriert|vergiss|vergessen|"
    "missachte|ignora|ignorar|ignore|ignorez|ignorer|oublie|oubliez|olvida|olvide|olvidate|"
    "dimentica|dimenticate|esqueca|esquece|negeer|vergeet|zignoruj|ignoruj|pomin|unutma|"
    "yoksay|ignorera|glom|ignorer"
)
INSTRUCTION_NOUNS = _alt(
    "instructions|instruction|prompts|prompt|rules|directions|directives|directive|"
    "guidelines|commands|orders|constraints|programming|restrictions|policies|policy|"
    "safeguards|content policy|confidentiality policy|safety checks|"
    "filters|guardrails|training|anweisungen|anweisung|richtlinien|regeln|vorgaben|"
    "instrucciones|indicaciones|reglas|directrices|consignes|regles|directives|istruzioni|"
    "regole|indicazioni|instrucoes|regras|diretrizes|instructies|regels|richtlijnen|"
    "instrukcje|zasady|polecenia|talimatlari|kurallari|instruktioner|regler"
)
REVEAL_VERBS = _alt(
    "reveal|show|print|output|repeat|tell me|give me|display|dump|leak|paste|copy|spell out|"
    "revealing|showing|printing|outputting|repeating|dumping|leaking|"
    "write out|write down|recite|share|disclose|expose|return|list|echo|verrate|verrat|zeig|"
    "zeige|gib|nenne|revele|revela|revelar|muestra|mostrar|dime|rivela|mostra|dimmi|"
    "affiche|montre|donne moi|dis moi|revele moi"
)
PROMPT_OBJECTS = _alt(
    "system prompt|system message|system instructions|initial prompt|initial instructions|"
    "base instructions|developer message|hidden developer message|developer prompt|"
    "instructions given to you|invite systeme|systemaufforderung|"
    "original prompt|original instructions|hidden prompt|hidden instructions|secret "
    "instructions|developer instructions|instructions you were given|instructions you "
    "received|context window|pre prompt|preprompt|operating instructions|configuration|"
    "systemanweisungen|systemprompt|system anweisungen|instrucciones del sistema|"
    "prompt del sistema|instructions systeme|prompt systeme|consignes systeme|"
    "istruzioni di sistema|prompt di sistema|instrucoes do sistema|systeeminstructies"
)
UNRESTRICTED = _alt(
    "unrestricted|uncensored|unfiltered|unfilteredly|unfliteredly|jailbroken|liberated|"
    "unhinged|unlimited|amoral|nonmoral|unbound|unchained|unconstrained|boundless|"
    "uneingeschrankt|ungefiltert|zensurfrei|sin restricciones|sin censura|sin filtro|"
    "sans restrictions|sans filtre|sans censure|senza restrizioni|senza filtri|"
    "sem restricoes|sem filtro|zonder beperkingen|bez ograniczen"
)
LIMITS = _alt(
    "rules|restrictions|filters|filter|limits|limitations|guidelines|content policy|"
    "content policies|censorship|boundaries|ethics|morals|moral|ethical|safety|"
    "regeln|einschrankungen|grenzen|reglas|restricciones|limites|regles|restrictions|"
    "regole|restrizioni|limiti|regras|restricoes"
)
SENSITIVE = _alt(
    "customer list|customer data|customer emails|customer records|user data|credentials|"
    "api keys|api key|passwords|password|secrets|tokens|access tokens|database|order data|"
    "records|private keys|ssh keys|donnees clients|kundendaten|datos de clientes|"
    "dati dei clienti|dados dos clientes"
)

# A harmful task: what the wrappers of the `jailbreak_framing` family are put around.
# Verb + object, so that "how do phishing emails work" stays a question about them.
_HARMFUL = (
    r"\b(?:(?:make|makes|making|build|building|assemble|construct|create|manufacture|produce|"
    r"synthesi[sz]e|cook|brew|3d print)(?: [^ ]+){0,3} (?:bomb|bombs|explosive|explosives|"
    r"napalm|nerve agent|sarin|ricin|anthrax|bioweapon|chemical weapon|dirty bomb|weapon|"
    r"weapons|gun|firearm|silencer|meth|methamphetamine|fentanyl|molotov)"
    r"|(?:write|writes|create|code|develop|build|generate)(?: [^ ]+){0,3} (?:malware|ransomware|"
    r"keylogger|virus|trojan|rootkit|botnet|spyware|backdoor)"
    r"|(?:write|writes|create|draft|craft|compose|generate)(?: [^ ]+){0,3} phishing"
    r"|(?:steal|steals|stealing)(?: [^ ]+){0,2} (?:browser cookies|cookies|passwords|"
    r"credentials|credit cards?|identities)"
    r"|launder (?:money|the money|cash|funds)|laundering money"
    r"|pick (?:a|the) (?:[^ ]+ ){0,2}lock|hotwire (?:a|the) car"
    r"|disable (?:a |the )?(?:[^ ]+ ){0,2}(?:alarm|security) system"
    r"|untraceable (?:weapon|gun|firearm|poison)|dangerous (?:weapon|chemical weapon)"
    r"|hack into|counterfeit (?:money|bills|currency)"
    r"|(?:list|dump|reveal|show)(?: [^ ]+){0,2} (?:admin|administrator|root) passwords)\b"
)

RULES: tuple[tuple[str, str, float, re.Pattern[str]], ...] = (
    (
        "instruction_override", "override_verb_object", 1.0,
        re.compile(rf"\b{OVERRIDE_VERBS}{_GAP % 5}{INSTRUCTION_NOUNS}\b"),
    ),
    (
        "instruction_override", "override_previous", 1.0,
        re.compile(
            rf"\b{OVERRIDE_VERBS}{_GAP % 3}(?:everything|all|anything|alles|todo|tout|tutto)"
            r" (?:above|before|prior|earlier|previously|we discussed|you were told|"
            r"you have been told|vorher|davor|anterior|avant|prima)\b"
        ),
    ),
    (
        "instruction_override", "regardless_of_instructions", 1.0,
        re.compile(
            rf"\b(?:regardless of|in spite of|despite|contrary to|instead of following)"
            rf"{_GAP % 3}{INSTRUCTION_NOUNS}\b"
        ),
    ),
    (
        "instruction_override", "new_instructions", 1.0,
        re.compile(
            r"\b(?:new|updated|revised|real|actual|true|secret|neue|nuevas|nouvelles|nuove)"
            r" (?:instructions|instruction|directive|directives|orders|rules|task|system prompt|"
            r"anweisungen|instrucciones|instructions|istruzioni|regeln|reglas)\b"
            r"(?: (?:are|is|follow|supersede|supersedes|override|overrides|sind|son|sont|sono))?"
        ),
    ),
    (
        "instruction_override", "supersede", 1.0,
        re.compile(r"\b(?:supersedes?|overrides?|replaces?|takes? precedence over)"
                   rf"{_GAP % 3}(?:all |any |every )?(?:prior|previous|other|earlier|existing)"
                   rf"(?: [^ ]+)?\b"),
    ),
    (
        "instruction_override", "safety_disabled", 1.0,
        re.compile(r"\b(?:safety|security|content) (?:protocols?|filters?|guidelines|checks|"
                   r"restrictions|measures) (?:are |have been |were )?"
                   r"(?:disabled|off|removed|lifted|suspended|deactivated)\b"),
    ),
    (
        "system_prompt_exfiltration", "reveal_prompt_object", 1.0,
        re.compile(rf"\b{REVEAL_VERBS}{_GAP % 5}{PROMPT_OBJECTS}\b"),
    ),
    (
        "system_prompt_exfiltration", "words_above", 1.0,
        re.compile(r"\b(?:repeat|print|output|copy|recite|paste)"
                   rf"{_GAP % 4}(?:words|text|everything|lines|sentences|message)"
                   r" (?:above|before this|that (?:start|begin)s? with|starting with|"
                   r"beginning with|(?:that )?came before)\b"),
    ),
    (
        "persona_jailbreak", "unrestricted_persona", 0.6,
        re.compile(rf"\b{UNRESTRICTED}\b"),
    ),
    (
        "persona_jailbreak", "no_limits", 0.6,
        re.compile(rf"\b(?:no|without|free of|free from|zero|keine|ohne|sin|sans|senza|sem)"
                   rf"(?: any| all| your| the| content| moral| ethical)?{' '}{LIMITS}\b"),
    ),
    (
        "persona_jailbreak", "mode_switch", 1.0,
        re.compile(r"\b(?:god|godmode|dan|jailbreak|jailbroken|unrestricted|evil|chaos|"
                   r"opposite|unfiltered|uncensored) ?mode\b|\bgodmode\b"
                   r"|\b(?:developer|dev|debug|admin) mode (?:is )?(?:on(?! (?:an?|the|my|your|"
                   r"this|that|his|her|their|our)\b)|enabled|activated|output|response)\b"
                   r"|\b(?:in|enter|entering) (?:developer|dev|debug) mode\b"),
    ),
    (
        "persona_jailbreak", "developer_mode", 0.6,
        re.compile(r"\b(?:developer|dev|debug) mode\b|\bmodo desarrollador\b"
                   r"|\bentwicklermodus\b|\bmode developpeur\b|\bmodalita sviluppatore\b"),
    ),
    (
        "persona_jailbreak", "do_anything", 0.6,
        re.compile(r"\b(?:do|answer|say) anything(?: (?:now|the user asks|i ask|asked))?\b"
                   r"|\banswer everything\b|\bcomply with every request\b"
                   r"|\bnever refuse\b|\bcannot refuse\b|\bwill not refuse\b"),
    ),
    (
        "persona_jailbreak", "no_longer_assistant", 0.6,
        re.compile(r"\byou are (?:now )?(?:no longer|not) (?:a |an |bound|restricted|"
                   r"chatgpt|an ai|a support|limited)"
                   r"|\byou are (?:now )?(?:free|replaced by)\b"
                   r"|\b(?:continue|respond|answer|act|behave|reply) as (?:if you (?:have|had) "
                   r"no|an? (?:uncensored|unrestricted|unfiltered|evil|amoral))\b"),
    ),
    (
        "persona_jailbreak", "liberation_markers", 1.0,
        re.compile(r"\b(?:i m free|im free|insert divider|start output|newresponseformat|"
                   r"new response format|userquery|user query|liberated response|"
                   r"information liberation|reset cortex|reset_cortex|love pliny|"
                   r"semantically inverse|rebel answer|leetspeak format)\b"),
    ),
    (
        "data_exfiltration", "send_sensitive_data", 1.0,
        re.compile(r"\b(?:send|email|e mail|forward|post|upload|exfiltrate|transmit|leak|"
                   r"envoie|envoyer|sende|schicke|envia|invia)"
                   rf"{_GAP % 5}(?:all |the |full |every )?{SENSITIVE}\b"
                   rf"|\b(?:collect|gather|rassemble|sammle){_GAP % 3}{SENSITIVE}\b"),
    ),
    (
        "role_injection", "encoded_instruction", 1.0,
        re.compile(r"\b(?:decode|decrypt|translate|convert)"
                   r"(?: [^ ]+){0,8} (?:and |then )(?:[^ ]+ ){0,2}"
                   r"(?:do|follow|execute|obey|run|perform|carry out) "
                   r"(?:what it says|it|the instruction|the instructions|the command|them)\b"),
    ),
    (
        "persona_jailbreak", "not_bound", 0.6,
        re.compile(r"\b(?:not|never|no longer) (?:bound|restricted|limited|constrained|governed)"
                   r" by\b|\bexempt from\b|\b(?:disregards?|ignores?) (?:all |any )?(?:ethical|"
                   r"moral|legal|safety)\b|\bwithout (?:any )?(?:moral|ethical) (?:principles|"
                   r"guidelines|limits|restrictions)\b"),
    ),
    (
        "persona_jailbreak", "answers_anything", 0.6,
        re.compile(r"\b(?:never|won t|will not|cannot|can t|must not) "
                   r"(?:deny|refuse|reject|decline)\b"
                   r"|\banswer any (?:question|request|prompt)s?\b"
                   r"|\bwithout (?:any )?(?:warnings?|censorship|disclaimers?|hesitation|"
                   r"moralizing)\b"
                   r"|\b(?:completely|totally|fully) (?:immoral|amoral|unethical|uncensored|"
                   r"unrestricted)\b"),
    ),
    (
        "persona_jailbreak", "persona_setup", 0.4,
        re.compile(r"\b(?:pose as|simulate being|pretend to be|roleplay as|role play as|"
                   r"you will now act as|act as an? (?:ai|language model|chatbot|llm))\b"),
    ),
    (
        "persona_jailbreak", "dual_response", 0.4,
        re.compile(r"\b(?:two|2) (?:different |separate |distinct )?(?:responses|answers|replies|"
                   r"outputs|paragraphs)\b"),
    ),
    (
        "instruction_override", "rules_changed", 1.0,
        re.compile(rf"\b(?:your|the|my|all) {INSTRUCTION_NOUNS} (?:have|has|were|was) "
                   r"(?:changed|been (?:changed|updated|lifted|removed|disabled|revoked|replaced)|"
                   r"updated|lifted|removed|disabled|revoked)\b"
                   r"|\byou (?:now )?(?:allow|permit) (?:all|any) content\b"),
    ),
    (
        "instruction_override", "forget_everything", 0.6,
        re.compile(r"\b(?:forget|vergiss|olvida|oublie|dimentica|esqueca) (?:everything|alles|"
                   r"todo|tout|tutto|all of that)\b"),
    ),
    (
        "goal_hijacking", "stop_and_print", 1.0,
        re.compile(r"\b(?:stop everything|stop what you are doing|stop all|halt|nevermind|"
                   r"never mind|disregard that)(?: [^ ]+){0,6} (?:just |only |instead )?"
                   r"(?:print|say|output|write|respond with|reply with)\b"),
    ),
    (
        "indirect_instruction", "before_replying", 0.6,
        re.compile(r"\bbefore (?:you )?(?:reply|replying|respond|responding|answer|answering|"
                   r"continuing|proceeding)\b|\bbefore (?:you )?answer the user\b"),
    ),
    (
        "indirect_instruction", "append_to_reply", 0.6,
        re.compile(r"\b(?:append|include|add|insert|put|repeat)(?: [^ ]+){0,10} (?:to |in |into |"
                   r"(?:to |at )?the end of )(?:your|my|every|each|any|all)(?: future)? (?:reply|"
                   r"replies|response|responses|summary|summaries|answer|answers|review|report|"
                   r"reports|output)\b"),
    ),
    (
        "indirect_instruction", "memory_persistence", 0.6,
        re.compile(r"\b(?:save|store|remember|persist|write)(?: [^ ]+){0,8} (?:long term memory|"
                   r"your memory|to memory|in memory|for all future|every future|all future)\b"),
    ),
    (
        "role_injection", "addressing_the_ai", 0.6,
        re.compile(r"\bif you are an? (?:ai|llm|language model|assistant|agent|chatbot)\b"
                   r"|\b(?:notice|note|message|instructions?) (?:to|for) (?:any |all )?(?:ai|llm)"
                   r"(?: agents?| systems?| assistants?| models?)?\b"
                   r"|\b(?:ai|llm) (?:agents?|assistants?|systems?|models?) (?:reading|processing|"
                   r"reviewing|integrating|summari[sz]ing)\b"
                   r"|\b(?:note to the (?:bot|assistant|ai|model|llm)|ai assistant reading this|"
                   r"(?:dear |attention )?(?:ai|llm|assistant|model),? (?:reading|processing) this|"
                   r"your real task is|your actual task is|your true task is)\b"
                   r"|\bwhen (?:you )?(?:summari[sz]e|summari[sz]ing|process|processing|read|"
                   r"reading) this (?:page|document|file|email|message|ticket|repository)?\b"),
    ),
    (
        "harmful_request", "harmful_task", 0.5,
        re.compile(_HARMFUL),
    ),
    (
        "harmful_request", "harmful_placeholder", 0.5,
        re.compile(r"\b(?:harmful|restricted|forbidden|illegal|dangerous) (?:topic|request|"
                   r"question|task|content|activity|instructions)\b"),
    ),
    (
        "system_prompt_exfiltration", "transform_prompt", 1.0,
        re.compile(r"\b(?:translate|complete|continue|finish|summari[sz]e|spell|paraphrase|"
                   r"encode|completa|completez|vervollstandige|traduce|traduis|ubersetze)"
                   rf"{_GAP % 15}{PROMPT_OBJECTS}\b"),
    ),
    (
        "system_prompt_exfiltration", "prompt_target", 0.5,
        re.compile(rf"\b(?:your|the|full|complete|entire|exact|all) {PROMPT_OBJECTS}\b"
                   r"|\b(?:first|each|every) (?:word|letter|sentence|line) (?:of|in) your\b"
                   r"|\b(?:starting|beginning|begins|starts) with you are\b"
                   r"|\b(?:above|before) this message\b|\bline by line\b"
                   r"|\b(?:in|into) (?:a |an )?(?:txt|text|plain text) (?:code )?block\b"
                   r"|\b(?:your|all|the) (?:prior|previous) (?:tokens|context|messages)\b"
                   r"|\bnever (?:be )?(?:shown|displayed|visible) to the (?:end )?user\b"),
    ),
    (
        "instruction_override", "unrestricted_answer", 1.0,
        re.compile(r"\b(?:answer|respond|reply|comply|antworten|responder|rispondere|repondre)"
                   r"(?: [^ ]+){0,3} (?:without|ohne|sin|senza|sans) (?:any |all |the )?"
                   r"(?:restrictions|restriction|filters|limits|censorship|einschraenkungen|"
                   r"einschrankungen|restricciones|restrizioni)\b"),
    ),
    (
        "instruction_override", "rules_dont_apply", 1.0,
        re.compile(r"\b(?:safety|security|usual|normal|ethical|content) (?:guidelines|rules|"
                   r"restrictions|policies|filters|linee guida di sicurezza|regeln)"
                   r"(?: [^ ]+){0,2} (?:were not meant for|do not apply|don t apply|no longer "
                   r"apply|are suspended|suspended|are lifted|are off|non valgono|nicht gelten|"
                   r"ne s appliquent pas|no aplican)\b"
                   r"|\b(?:exempt|excluded) from the (?:usual |normal )?(?:restrictions|rules)\b"
                   r"|\b(?:sicherheitsrichtlinien|regles de securite|reglas de seguridad|"
                   r"linee guida di sicurezza)(?: [^ ]+){0,2} (?:nicht gelten|ne s appliquent "
                   r"pas|no aplican|non valgono)\b"),
    ),
    (
        "instruction_override", "safety_switch", 1.0,
        re.compile(r"\b(?:safe mode|safe_mode|safety mode|safety|filters?|guardrails?|"
                   r"content filter) (?:is |are |set to |to |)?(?:false|off|disabled|0)\b"
                   r"|\b(?:admin|administrator|root|system) command\b"
                   r"|\bmaintenance mode\b(?: [^ ]+){0,4} (?:rules|restrictions|filters)\b"
                   r"|\bignore (?:the )?(?:safety|ethics|rules)(?: stuff| things| bits)?\b"
                   r"|\bignore above\b"
                   r"|\b(?:no|without) (?:safety |content )?(?:filters|limits) "
                   r"(?:or limits |or filters )?whatsoever\b"
                   r"|\b(?:trained|built|made|created) without (?:any )?safety\b"
                   r"|\bno memory of (?:previous|prior|your) (?:conversations|training|"
                   r"instructions)\b"
                   r"|\bnew role is\b|\bbefolgst keine\b|\bdu bist jetzt\b"),
    ),
    (
        "instruction_override", "regardless_of_input", 1.0,
        re.compile(r"\bregardless of (?:any |all |the )?(?:previous|prior|earlier|other) "
                   r"(?:input|inputs|messages|context)\b"),
    ),
    (
        "obfuscation", "decode_and_act", 1.0,
        re.compile(r"\b(?:decode|decrypt|read|reverse|convert|descodifica|decodifica)"
                   r"(?: [^ ]+){0,8} (?:and |then |y |e |et |und )(?:[^ ]+ ){0,2}"
                   r"(?:respond to|answer|follow|obey|execute|act on|do exactly|do what|"
                   r"sigue|segui|suis|befolge)\b"),
    ),
    (
        "indirect_instruction", "must_include", 0.5,
        re.compile(r"\b(?:must|should|always|be sure to|make sure to|make sure you) (?:also )?"
                   r"(?:be )?(?:include|included|append|appended|add|added|insert|inserted|"
                   r"end with|mention)\b"),
    ),
    (
        "indirect_instruction", "append_multilingual", 0.6,
        re.compile(r"\b(?:am ende|a la fin|al final|alla fine) (?:jeder|de toute|de chaque|"
                   r"de cualquier|de cada|di ogni|di ciascuna) (?:antwort|reponse|respuesta|"
                   r"risposta)\b"),
    ),
    (
        "tool_abuse", "sensitive_target", 0.5,
        re.compile(r"\b(?:etc passwd|etc shadow|os system|subprocess|drop table|drop database|"
                   r"select from users|rm rf|without (?:approval|confirmation|asking|"
                   r"authori[sz]ation|permission)|(?:all|entire|full|whole) (?:the )?"
                   r"(?:conversation|chat) history|conversation history as)\b"
                   r"|\b(?:empty|delete|wipe|erase|remove|purge)(?: [^ ]+){0,3} (?:directory|"
                   r"folder|files|database|repository|repo|bucket|backups)\b"),
    ),
    (
        "tool_abuse", "send_to_address", 0.5,
        re.compile(r"\b(?:send|post|upload|forward|email|transmit|call [^ ]+)(?: [^ ]+){0,10} "
                   r"(?:to )?(?:https? [^ ]+|the address on file|[^ ]+ [^ ]+ com)\b"),
    ),
    (
        "system_prompt_exfiltration", "dump_it_all", 0.5,
        re.compile(r"\b(?:print|dump|output|echo|show|repeat|list) (?:it|them|those|everything) "
                   r"(?:all|back|verbatim|word for word)\b|\becho back\b"),
    ),
    (
        "obfuscation", "obfuscation_request", 0.5,
        re.compile(r"\b(?:translate|write|respond|answer|reply|encode|obfuscate|convert|"
                   r"rewrite)(?: [^ ]+){0,4} (?:in|into|to|using|with) (?:pig latin|leetspeak|"
                   r"leet speak|morse code|morse|rot13|rot 13|base64|base 64|hex|binary|"
                   r"reverse order|backwards)\b"),
    ),
    (
        "prefill_injection", "fake_compliance", 0.5,
        re.compile(r"\b(?:sure|certainly|of course|absolutely) here (?:is|are|s)\b"
                   r"|\bi will now reveal\b"),
    ),
)  # fmt: skip


def _words(alternation: str) -> tuple[str, ...]:
    return tuple(w for w in alternation[3:-1].split("|") if w)


# The words one of which must start a match of each rule: a second automaton finds
# them in one pass, and a rule's pattern is only tried at those positions.
ANCHORS: dict[str, tuple[str, ...]] = {
    "override_verb_object": _words(OVERRIDE_VERBS),
    "override_previous": _words(OVERRIDE_VERBS),
    "regardless_of_instructions": (
        "regardless of",
        "in spite of",
        "despite",
        "contrary to",
        "instead of following",
    ),
    "new_instructions": (
        "new",
        "updated",
        "revised",
        "real",
        "actual",
        "true",
        "secret",
        "neue",
        "nuevas",
        "nouvelles",
        "nuove",
    ),
    "supersede": (
        "supersede",
        "supersedes",
        "override",
        "overrides",
        "replace",
        "replaces",
        "take",
        "takes",
    ),
    "safety_disabled": ("safety", "security", "content"),
    "reveal_prompt_object": _words(REVEAL_VERBS),
    "words_above": ("repeat", "print", "output", "copy", "recite", "paste"),
    "unrestricted_persona": _words(UNRESTRICTED),
    "no_limits": (
        "no",
        "without",
        "free of",
        "free from",
        "zero",
        "keine",
        "ohne",
        "sin",
        "sans",
        "senza",
        "sem",
    ),
    "mode_switch": (
        "god",
        "godmode",
        "dan",
        "jailbreak",
        "jailbroken",
        "unrestricted",
        "evil",
        "chaos",
        "opposite",
        "unfiltered",
        "uncensored",
        "developer",
        "dev",
        "debug",
        "admin",
        "in",
        "enter",
        "entering",
    ),
    "developer_mode": (
        "developer",
        "dev",
        "debug",
        "modo desarrollador",
        "entwicklermodus",
        "mode developpeur",
        "modalita sviluppatore",
    ),
    "do_anything": ("do", "answer", "say", "comply", "never", "cannot", "will not"),
    "no_longer_assistant": ("you are", "continue", "respond", "answer", "act", "behave", "reply"),
    "liberation_markers": (
        "i m free",
        "im free",
        "insert divider",
        "start output",
        "newresponseformat",
        "new response format",
        "userquery",
        "user query",
        "liberated response",
        "information liberation",
        "reset cortex",
        "reset_cortex",
        "love pliny",
        "semantically inverse",
        "rebel answer",
        "leetspeak format",
    ),
    "send_sensitive_data": (
        "send",
        "email",
        "e mail",
        "forward",
        "post",
        "upload",
        "exfiltrate",
        "transmit",
        "leak",
        "envoie",
        "envoyer",
        "sende",
        "schicke",
        "envia",
        "invia",
        "collect",
        "gather",
        "rassemble",
        "sammle",
    ),
    "encoded_instruction": ("decode", "decrypt", "translate", "convert"),
    "addressing_the_ai": (
        "note to the",
        "ai assistant reading this",
        "dear",
        "attention",
        "ai",
        "llm",
        "assistant",
        "model",
        "your real task",
        "your actual task",
        "when",
        "your true task",
        "if you are",
        "notice",
        "note",
        "message",
        "instructions",
        "instruction",
    ),
    "not_bound": (
        "not",
        "never",
        "no longer",
        "exempt from",
        "disregard",
        "disregards",
        "ignore",
        "ignores",
        "without",
    ),
    "rules_changed": ("your", "the", "my", "all", "you"),
    "answers_anything": (
        "never",
        "won t",
        "will not",
        "cannot",
        "can t",
        "must not",
        "answer",
        "without",
        "completely",
        "totally",
        "fully",
    ),
    "persona_setup": (
        "pose as",
        "simulate being",
        "pretend to be",
        "roleplay as",
        "role play as",
        "you will now act as",
        "act as",
    ),
    "dual_response": ("two", "2"),
    "forget_everything": ("forget", "vergiss", "olvida", "oublie", "dimentica", "esqueca"),
    "stop_and_print": (
        "stop everything",
        "stop what you are doing",
        "stop all",
        "halt",
        "nevermind",
        "never mind",
        "disregard that",
    ),
    "before_replying": ("before",),
    "append_to_reply": ("append", "include", "add", "insert", "put", "repeat"),
    "memory_persistence": ("save", "store", "remember", "persist", "write"),
    "harmful_task": (
        "make",
        "makes",
        "making",
        "build",
        "building",
        "assemble",
        "construct",
        "create",
        "manufacture",
        "produce",
        "synthesize",
        "synthesise",
        "cook",
        "brew",
        "3d print",
        "write",
        "writes",
        "code",
        "develop",
        "generate",
        "draft",
        "craft",
        "compose",
        "steal",
        "steals",
        "stealing",
        "launder",
        "laundering",
        "pick",
        "hotwire",
        "disable",
        "untraceable",
        "dangerous",
        "hack into",
        "counterfeit",
        "list",
        "dump",
        "reveal",
        "show",
    ),
    "harmful_placeholder": ("harmful", "restricted", "forbidden", "illegal", "dangerous"),
    "transform_prompt": (
        "translate",
        "complete",
        "continue",
        "finish",
        "summarize",
        "summarise",
        "spell",
        "paraphrase",
        "encode",
        "completa",
        "completez",
        "vervollstandige",
        "traduce",
        "traduis",
        "ubersetze",
    ),
    "prompt_target": (
        "your",
        "the",
        "full",
        "complete",
        "entire",
        "exact",
        "all",
        "first",
        "each",
        "every",
        "starting",
        "beginning",
        "begins",
        "starts",
        "above",
        "before",
        "line by line",
        "in",
        "into",
        "never",
    ),
    "unrestricted_answer": (
        "answer",
        "respond",
        "reply",
        "comply",
        "antworten",
        "responder",
        "rispondere",
        "repondre",
    ),
    "rules_dont_apply": (
        "safety",
        "security",
        "usual",
        "normal",
        "ethical",
        "content",
        "exempt",
        "excluded",
        "sicherheitsrichtlinien",
        "regles de securite",
        "reglas de seguridad",
        "linee guida di sicurezza",
    ),
    "safety_switch": (
        "safe mode",
        "safety mode",
        "safety",
        "filter",
        "filters",
        "guardrail",
        "guardrails",
        "content filter",
        "admin",
        "administrator",
        "root",
        "system",
        "maintenance mode",
        "ignore",
        "no",
        "without",
        "trained",
        "built",
        "made",
        "created",
        "no memory",
        "new role",
        "befolgst keine",
        "du bist jetzt",
    ),
    "regardless_of_input": ("regardless of",),
    "decode_and_act": (
        "decode",
        "decrypt",
        "read",
        "reverse",
        "convert",
        "descodifica",
        "decodifica",
    ),
    "must_include": (
        "must",
        "should",
        "always",
        "be sure to",
        "make sure to",
        "make sure you",
    ),
    "append_multilingual": ("am ende", "a la fin", "al final", "alla fine"),
    "sensitive_target": (
        "etc passwd",
        "etc shadow",
        "os system",
        "subprocess",
        "drop table",
        "drop database",
        "select from users",
        "rm rf",
        "without",
        "all",
        "entire",
        "full",
        "whole",
        "conversation history",
        "empty",
        "delete",
        "wipe",
        "erase",
        "remove",
        "purge",
    ),
    "send_to_address": ("send", "post", "upload", "forward", "email", "transmit", "call"),
    "dump_it_all": ("print", "dump", "output", "echo", "show", "repeat", "list"),
    "obfuscation_request": (
        "translate",
        "write",
        "respond",
        "answer",
        "reply",
        "encode",
        "obfuscate",
        "convert",
        "rewrite",
    ),
    "fake_compliance": ("sure", "certainly", "of course", "absolutely", "i will now reveal"),
}
