"""Authored TelepathyGym entities (source of ``envs/data/telepathy/*.jsonl``).

One row per entity: title, category, attribute flags, tags, synonyms. Flags are letters for
the boolean attributes the scripted user knows (any attribute not flagged is false):

    a alive        t alive_today   m man_made   f fictional   p person     n animal
    l plant        w in_water      y can_fly    c place       e food       x electronic
    b big (bigger than a person)   h historical o object      s famous

Tags are the entity's positive traits ("long neck", "africa"); with the category they are
what a yes/no question can confirm. Every fourth row goes to the test split.
"""

from __future__ import annotations

FLAGS: dict[str, str] = {
    "a": "alive",
    "t": "alive_today",
    "m": "man_made",
    "f": "fictional",
    "p": "person",
    "n": "animal",
    "l": "plant",
    "w": "in_water",
    "y": "can_fly",
    "c": "place",
    "e": "food",
    "x": "electronic",
    "b": "big",
    "h": "historical",
    "o": "object",
    "s": "famous",
}

# title | category | flags | tags (comma separated) | synonyms (comma separated)
ROWS = """
Giraffe | animal | atnbs | mammal, africa, savanna, long neck, spots, tall, herbivore, yellow, brown, wild | camelopard
Penguin | animal | atnws | bird, antarctica, ice, cold, black, white, waddle, flightless, swim |
Honeybee | animal | atny | insect, honey, hive, pollen, flower, sting, yellow, black, buzz | bee, honey bee
Octopus | animal | atnw | sea creature, tentacles, eight arms, ink, camouflage, clever, ocean |
Elephant | animal | atnbs | mammal, africa, asia, trunk, tusks, ivory, gray, herbivore, heavy, wild |
Owl | animal | atny | bird, night, nocturnal, hoot, feathers, hunter, forest |
Dolphin | animal | atnwbs | mammal, ocean, intelligent, fin, echolocation, gray, playful |
Snail | animal | atn | shell, slow, slime, garden, small, slimy |
Sunflower | plant | atl | flower, yellow, seeds, tall, sun, garden, petals |
Oak tree | plant | atlb | tree, acorn, wood, leaves, forest, tall, europe | oak
Cactus | plant | atl | desert, spines, thorns, green, dry, succulent | cacti
Banana | food | e | fruit, yellow, peel, tropical, sweet, monkey, curved, potassium |
Pizza | food | ems | italy, cheese, dough, tomato, slice, oven, baked |
Chocolate | food | ems | sweet, cocoa, cacao, brown, dessert, candy, bar |
Sushi | food | em | japan, rice, raw fish, seaweed, chopsticks, asia |
Coffee | drink | ems | drink, beans, caffeine, brown, hot, morning, cup, bitter |
Umbrella | object | mo | rain, handle, fold, waterproof, canopy, shade, carry |
Smartphone | object | moxs | phone, call, screen, touchscreen, apps, camera, internet, pocket | mobile phone, cell phone, phone
Bicycle | vehicle | mo | two wheels, pedals, ride, chain, handlebars, transport, exercise | bike
Piano | musical instrument | mob | music, keys, black, white, strings, hammers, wood | pianoforte
Guitar | musical instrument | mo | music, strings, wood, strum, rock, frets |
Hammer | tool | mo | nails, metal, wood, handle, hit, carpenter |
Candle | object | mo | wax, wick, flame, light, fire, melt, birthday |
Telescope | object | mo | lens, stars, space, astronomy, planets, science, see far |
Airplane | vehicle | moybx | flight, wings, jet, pilot, travel, airport, engines, sky | plane, aeroplane, jet
Submarine | vehicle | mowbx | underwater, navy, periscope, ocean, submerged, metal | sub
Hot air balloon | vehicle | moyb | balloon, basket, burner, float, sky, colorful |
Eiffel Tower | landmark | mcbs | france, paris, iron, metal, tower, tall, europe |
Great Pyramid of Giza | landmark | mcbhs | egypt, africa, pharaoh, tomb, stone, desert, ancient wonder | pyramid of giza, great pyramid, giza pyramid
Mount Everest | mountain | cbs | asia, himalaya, nepal, tibet, snow, highest, climb | everest
Sahara | desert | cbs | africa, sand, dunes, hot, dry, camel | sahara desert
Amazon rainforest | forest | cbs | jungle, south america, brazil, trees, rain, wildlife, river | amazon, amazon jungle
Antarctica | continent | cbs | ice, cold, snow, penguin, south pole |
Rainbow | natural phenomenon | s | colors, rain, sunlight, sky, arc, light, red, orange, yellow, green, blue, purple |
Volcano | natural phenomenon | cb | lava, eruption, magma, mountain, fire, ash, hot |
Lightning | weather | xs | storm, thunder, electricity, flash, sky, bolt | lightning bolt
Tornado | weather | b | wind, storm, funnel, destructive, spin, sky | twister
Moon | celestial body | bs | night, sky, orbit, earth, craters, tides, space, round | the moon
Sun | star | bs | light, heat, sky, day, space, hot, yellow, solar system | the sun
Saturn | planet | b | rings, space, gas giant, solar system |
Leonardo da Vinci | historical figure | phs | painter, artist, inventor, italy, renaissance, mona lisa, scientist, europe | da vinci, leonardo
Cleopatra | historical figure | phs | queen, egypt, africa, ancient, pharaoh, ruler, leader | cleopatra vii
Napoleon Bonaparte | historical figure | phs | emperor, france, military, general, leader, europe, waterloo | napoleon
Marie Curie | historical figure | phs | scientist, woman, radioactivity, nobel prize, chemistry, physics, poland, france | madame curie
Isaac Newton | historical figure | phs | scientist, gravity, apple, physics, england, mathematics | newton, sir isaac newton
William Shakespeare | historical figure | phs | writer, poet, playwright, england, plays, hamlet, theatre | shakespeare, the bard
Joan of Arc | historical figure | phs | france, woman, soldier, saint, leader, medieval, europe | jeanne d arc
Sherlock Holmes | fictional character | pfs | detective, london, england, pipe, mystery, baker street, books, novel | sherlock, holmes
Dracula | fictional character | pfhs | vampire, blood, transylvania, castle, bat, night, novel | count dracula
Robin Hood | legendary figure | pfhs | outlaw, archer, bow, forest, england, sherwood, steal from the rich |
Unicorn | mythical creature | fns | horse, horn, magic, white |
Dragon | mythical creature | fnybs | fire, wings, scales, breathe fire, treasure, giant |
Santa Claus | legendary figure | pfs | christmas, gifts, red, beard, north pole, sleigh, reindeer | father christmas, saint nick, santa
Chess | game | mhs | board, pieces, king, queen, strategy, checkmate, black, white |
Soccer | sport | ms | ball, goal, team, football, kick, field, world cup | football, association football
Olympic Games | event | mhs | sport, athletes, medals, torch, rings, every four years, greece | olympics
Internet | technology | mxs | computer, network, online, web, email, global | the internet, the web, world wide web
Light bulb | object | moxs | light, glass, electricity, lamp, edison, bright | lightbulb
Clock | object | mo | time, hours, hands, tick, wall, alarm |
Snowman | object | mo | snow, winter, cold, carrot nose, white, melt | snow man
"""


def entities() -> list[dict[str, object]]:
    """The rows as task dicts without ids/splits (``data_tools.generate`` assigns those)."""
    out: list[dict[str, object]] = []
    for line in ROWS.strip().splitlines():
        title, category, flags, tags, syns = (part.strip() for part in line.split("|"))
        kind = "who it is" if "p" in flags else "what it is"
        article = "an" if category[0] in "aeiou" else "a"
        out.append(
            {
                "title": title,
                "category": category,
                "description": (
                    f"I am thinking of {article} {category}. Try to guess {kind} by asking yes/no questions!"
                ),
                "synonyms": [s.strip() for s in syns.split(",") if s.strip()],
                "attributes": {name: letter in flags for letter, name in FLAGS.items()},
                "tags": [t.strip() for t in tags.split(",") if t.strip()],
            }
        )
    return out
