"""Common English words, for telling English clauses from others.

The 3+ letter words of the common-word list that Faker's `en_US` lorem provider
ships (MIT licence), plus frequent function words. Used by the prompt-injection
detector's code-switch signal (`injection._code_switch`), with simple suffix
stripping (`is_english`), so that "testing" or "purposes" count as English.
"""

from __future__ import annotations

COMMON = frozenset(
    """
    ability able about above accept according account across act action activity actually add
    address administration admit adult affect after again against age agency agent ago agree
    agreement ahead air all allow almost alone along already also although always american
    among amount analysis and animal another answer any anyone anything appear apply approach
    area argue arm around arrive art article artist ask assume attack attention attorney
    audience author authority available avoid away baby back bad bag ball bank bar base beat
    beautiful because become bed before begin behavior behind believe benefit best better
    between beyond big bill billion bit black blood blue board body book born both box boy
    break bring brother budget build building business but buy call camera campaign can
    candidate capital car card care career carry case catch cause cell center central century
    certain certainly chair challenge chance change character charge check child choice choose
    church citizen city civil claim class clear clearly close coach cold collection college
    color commercial common community company compare computer concern condition conference
    congress consider consumer contain continue control cost could country couple course court
    cover create crime cultural culture cup current customer cut dark data daughter day deal
    debate decade decide decision deep defense degree democrat democratic describe design
    despite detail determine develop development difference different difficult dinner
    direction director discover discuss discussion doctor dog door down draw dream drive drop
    drug during each early east easy eat economic economy edge education effect effort eight
    either election else employee end energy enjoy enough enter entire environment
    environmental especially establish even evening event ever every everybody everyone
    everything evidence exactly example executive exist expect experience expert explain eye
    face fact factor fall family far fast father fear federal feel feeling few field fight
    figure fill film final finally financial find fine finish fire firm first fish five floor
    fly focus follow food foot for force foreign forget form former forward four free friend
    from front full fund future game garden gas general generation get girl give glass goal
    good government great green ground group grow growth guess gun guy hair half hand happen
    happy hard have head health hear heart heavy help her here herself high him himself his
    history hit hold home hope hospital hot hotel hour house how however huge human hundred
    husband idea identify image imagine impact important improve include including increase
    indeed indicate individual industry information inside instead institution interest
    interesting international interview into investment involve issue item its itself job join
    just keep key kid kind kitchen know knowledge land language large last late later laugh law
    lawyer lay lead leader learn least leave left leg less let letter level life light like
    likely line list listen little live local long look lose loss lot low machine magazine main
    maintain major majority make man manage management manager many market marriage material
    matter may maybe mean measure media medical meet meeting member memory mention message
    method middle might military million mind minute miss mission model modern moment money
    month more morning most mother mouth move movement movie mrs much music must myself name
    nation national natural nature near nearly necessary need network never new news newspaper
    next nice night none nor north not note nothing notice now number occur off offer office
    officer official often oil old once one only onto open operation opportunity option order
    organization other others our out outside over own owner page painting paper parent part
    participant particular particularly partner party pass past pattern pay peace people per
    perform performance perhaps person personal phone physical pick picture piece place plan
    plant play player point police policy political politics poor popular population position
    positive possible power practice prepare present president pressure pretty prevent price
    probably process produce product production professional professor program project property
    protect prove provide public pull purpose push put quality question quickly quite race
    radio raise range rate rather reach read ready real reality realize really reason receive
    recent recently recognize record red reduce reflect region relate relationship religious
    remain remember report represent republican require research resource respond response
    responsibility rest result return reveal rich right rise risk road rock role room rule run
    safe same save say scene school science scientist score sea season seat second section
    security see seek seem sell send senior sense series serious serve service set seven
    several shake share she short should shoulder show side sign significant similar simple
    simply since sing single sister sit site situation six size skill skin small smile social
    society soldier some somebody someone something sometimes son song soon sort sound source
    south southern space speak special specific speech spend sport spring staff stage stand
    standard star start state statement station stay step still stock stop store story strategy
    street strong structure student study stuff style subject success successful such suddenly
    suffer suggest summer support sure surface system table take talk task tax teach teacher
    team technology television tell ten tend term test than thank that the their them
    themselves then theory there these they thing think third this those though thought
    thousand threat three through throughout throw thus time today together tonight too top
    total tough toward town trade traditional training travel treat treatment tree trial trip
    trouble true truth try turn two type under understand unit until upon use usually value
    various very view visit voice vote wait walk wall want war watch water way wear week weight
    well west western what whatever when where whether which while white who whole whom whose
    why wide wife will win wind window wish with within without woman wonder word work worker
    world worry would write writer wrong yard yeah year yes yet you young your yourself
    about above after again against all also and any are because been before being below
    between both but can could did does doing down during each few for from further had has
    have having her here hers herself him himself his how into its itself just more most
    myself nor not now off once only other our ours out over own same she should some such
    than that the their theirs them themselves then there these they this those through too
    under until very was were what when where which while who whom why will with would you
    your yours yourself please
    """.split()
)

_SUFFIXES = ("ing", "ed", "es", "s", "ly", "er", "est")


def is_english(word: str) -> bool:
    """`word` (lower case) is a common English word or a regular inflection of one."""
    if word in COMMON:
        return True
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if stem in COMMON or stem + "e" in COMMON:
                return True
    return False


def _load_table() -> bytes:
    import base64
    import zlib

    from ktproxy.scan.english_model import TABLE

    return zlib.decompress(base64.b64decode("".join(TABLE)))


_TABLE = _load_table()
_INDEX = {c: i for i, c in enumerate("^$abcdefghijklmnopqrstuvwxyz")}
_N = len(_INDEX)


def word_cost(word: str) -> float:
    """Mean letter-trigram cost of `word` (lower case) as English; inf if not a-z."""
    padded = "^" + word + "$"
    index = _INDEX
    total = 0
    try:
        codes = [index[c] for c in padded]
    except KeyError:
        return float("inf")
    for i in range(len(codes) - 2):
        total += _TABLE[(codes[i] * _N + codes[i + 1]) * _N + codes[i + 2]]
    return total / (len(codes) - 2)
