"""Name data for the synthetic population.

Lists are ordered by rough popularity; `zipf_weights` turns rank into a heavy-tailed frequency so
that many people share the common names, as in real registers. All names are common public given
names and surnames; the people built from them are fictional.
"""

from __future__ import annotations

import unicodedata

import numpy as np

FEMALE = [
    "Olivia", "Amelia", "Isla", "Ava", "Sarah", "Emily", "Sophie", "Jessica", "Charlotte",
    "Elizabeth", "Katherine", "Rebecca", "Victoria", "Jennifer", "Margaret", "Susan", "Deborah",
    "Patricia", "Abigail", "Samantha", "Eleanor", "Isabella", "Grace", "Lily", "Mia", "Chloe",
    "Ella", "Evie", "Poppy", "Ruby", "Freya", "Hannah", "Laura", "Rachel", "Emma", "Lucy",
    "Nicola", "Claire", "Helen", "Karen", "Julie", "Amy", "Louise", "Kelly", "Gemma", "Natalie",
    "Joanne", "Lisa", "Michelle", "Catherine", "Alice", "Daisy", "Phoebe", "Matilda", "Florence",
    "Harriet", "Megan", "Bethany", "Holly", "Leah", "Aisha", "Fatima", "Amina", "Maryam",
    "Zainab", "Priya", "Anjali", "Chantelle", "Jade", "Shannon", "Courtney", "Kayleigh", "Aimee",
    "Zoë", "Siân", "Aoife", "Niamh", "Chloë", "Renée", "Małgorzata", "Agnieszka", "Zsófia",
    "Saoirse", "Eilís", "Bríd", "Iwona", "Oksana", "Ana", "Joana", "Inês",
]
MALE = [
    "Oliver", "George", "Noah", "Harry", "Jack", "James", "William", "Thomas", "John",
    "Michael", "Robert", "David", "Daniel", "Matthew", "Christopher", "Joseph", "Samuel",
    "Alexander", "Benjamin", "Edward", "Richard", "Anthony", "Andrew", "Peter", "Stephen",
    "Steven", "Jonathan", "Nicholas", "Timothy", "Kenneth", "Henry", "Frederick", "Charlie",
    "Jacob", "Leo", "Oscar", "Archie", "Alfie", "Freddie", "Theo", "Arthur", "Mohammed",
    "Muhammad", "Ali", "Omar", "Yusuf", "Ibrahim", "Hassan", "Imran", "Ravi", "Arjun", "Mark",
    "Paul", "Gary", "Lee", "Craig", "Darren", "Wayne", "Jamie", "Ryan", "Liam", "Connor",
    "Kyle", "Callum", "Ethan", "Mason", "Logan", "Tyler", "Dylan", "Reece", "Gabriel",
    "Łukasz", "Zoltán", "Seán", "Dáithí", "Piotr", "Tomasz", "Bartłomiej", "Jakub", "Ciarán",
    "Oisín", "José", "João", "András", "Mihai", "Andrei",
]

# Formal name -> informal forms and spelling variants a record may carry instead.
NICKNAMES: dict[str, list[str]] = {
    "William": ["Bill", "Will", "Billy"], "Katherine": ["Katie", "Kate", "Katharine"],
    "Catherine": ["Cathy", "Kate", "Kathryn"], "John": ["Jon", "Johnny", "Jack"],
    "Jonathan": ["Jon", "Jonny"], "Elizabeth": ["Liz", "Beth", "Lizzie"],
    "Robert": ["Rob", "Bob", "Bobby"], "Margaret": ["Maggie", "Meg", "Peggy"],
    "Thomas": ["Tom", "Tommy"], "James": ["Jim", "Jimmy", "Jamie"], "Michael": ["Mike", "Mick"],
    "Alexander": ["Alex", "Sandy"], "Jennifer": ["Jen", "Jenny"], "Christopher": ["Chris"],
    "Daniel": ["Dan", "Danny"], "Matthew": ["Matt"], "Samuel": ["Sam", "Sammy"],
    "Rebecca": ["Becky", "Becca"], "Victoria": ["Vicky", "Tori"],
    "Charlotte": ["Charlie", "Lottie"], "Joseph": ["Joe", "Joey"], "Anthony": ["Tony"],
    "Edward": ["Ed", "Eddie", "Ted"], "Richard": ["Rich", "Rick", "Dick"],
    "Benjamin": ["Ben", "Benny"], "Nicholas": ["Nick", "Nicky"], "Deborah": ["Debbie", "Deb"],
    "Susan": ["Sue", "Suzy"], "Patricia": ["Pat", "Trish"], "Abigail": ["Abi", "Abby"],
    "Jessica": ["Jess"], "Samantha": ["Sam", "Sammy"], "Andrew": ["Andy", "Drew"],
    "Peter": ["Pete"], "Stephen": ["Steve", "Steven"], "Steven": ["Steve", "Stephen"],
    "Kenneth": ["Ken", "Kenny"], "Timothy": ["Tim"], "Oliver": ["Ollie"],
    "Henry": ["Harry", "Hal"], "Frederick": ["Fred", "Freddie"], "Eleanor": ["Ellie", "Nell"],
    "Isabella": ["Bella", "Izzy"], "Amelia": ["Millie"], "Emily": ["Em", "Emmy"],
    "Gabriel": ["Gabe"], "Nicola": ["Nicky"], "Natalie": ["Nat"], "Harriet": ["Hattie"],
    "Florence": ["Flo"], "Matilda": ["Tilly"], "Aimee": ["Amy"], "Mohammed": ["Muhammad"],
    "Muhammad": ["Mohammed", "Mohammad"], "Zoë": ["Zoe"], "Chloë": ["Chloe"],
}

SURNAMES = [
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards",
    "Hughes", "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood",
    "Turner", "Martin", "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King",
    "Baker", "Harrison", "Morgan", "Allen", "James", "Scott", "Phillips", "Watson", "Davis",
    "Parker", "Price", "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter",
    "Richardson", "Bailey", "Collins", "Bell", "Shaw", "Murphy", "Miller", "Cox", "Richards",
    "Khan", "Marshall", "Anderson", "Simpson", "Ellis", "Adams", "Singh", "Begum", "Wilkinson",
    "Foster", "Chapman", "Powell", "Webb", "Rogers", "Gray", "Mason", "Ali", "Hunt", "Hussain",
    "Campbell", "Matthews", "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight", "Lloyd",
    "Butler", "Russell", "Barker", "Fisher", "Stevens", "Jenkins", "Murray", "Dixon", "Harvey",
    "Graham", "Pearson", "Ahmed", "Fletcher", "Walsh", "Kaur", "Gibson", "Howard", "Andrews",
    "Stewart", "Elliott", "Reynolds", "Saunders", "Payne", "Fox", "Ford", "Pearce", "Day",
    "Brooks", "West", "Lawrence", "Cole", "Atkinson", "Bradley", "Spencer", "Gill", "Dawson",
    "Ball", "Burton", "O'Brien", "Watts", "Rose", "Booth", "Perry", "Ryan", "Grant", "Wells",
    "Armstrong", "Francis", "Rees", "Hayes", "Hart", "Hudson", "Newman", "Barrett", "Webster",
    "Hunter", "Gregory", "Carr", "Lowe", "Page", "Marsh", "Riley", "Dunn", "Woods", "Parsons",
    "McDonald", "MacLeod", "O'Sullivan", "Nowak", "Kowalczyk", "Wiśniewski", "Wójcik",
    "Kowalski", "Szabó", "Nagy", "Müller", "Gonçalves", "Ó Briain", "Ní Bhriain", "Popescu",
    "Da Silva", "De Souza", "Van der Berg", "Mahmood", "Rahman", "Chowdhury", "Okafor",
    "Mensah", "Nguyen", "Chen", "Wang", "Kovács", "Ferreira", "Lopes",
]

TITLES_F = ["Mrs", "Miss", "Ms"]
TITLES_M = ["Mr"]


def zipf_weights(n: int, s: float = 1.0) -> np.ndarray:
    """Normalised 1/rank^s weights: a few names very common, a long tail of rare ones."""
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return w / w.sum()


# cp1252 cannot carry Ł, ł, ś, ő ...; agencies on cp1252 systems type the nearest Latin letter.
_SPECIAL = str.maketrans({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d"})


def to_codec(text: str, codec: str) -> str:
    """Return `text` with any character the codec cannot encode transliterated to plain Latin."""
    try:
        text.encode(codec)
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text.translate(_SPECIAL):
        try:
            ch.encode(codec)
            out.append(ch)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch)
            out.append("".join(c for c in base if not unicodedata.combining(c)))
    return "".join(out)
