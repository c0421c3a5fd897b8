"""Authored TurtleGym stories (source of ``envs/data/turtle/*.jsonl``).

Each story: title, surface (what the agent sees), bottom (the hidden story), key points
``(statement, weight, keywords)`` and yes/no facts ``(question, answer, keywords)``. Keywords
use the shorthand ``"group;group"`` with ``|`` between alternatives; a key point's statement
contains all of its keyword groups, so telling the statements scores 1.0. Every fourth story
goes to the test split.
"""

from __future__ import annotations

Story = tuple[str, str, str, list[tuple[str, float, str]], list[tuple[str, str, str]]]

STORIES: list[Story] = [
    (
        "The Silent Ovation",
        "A pianist finished her concert. Nobody in the full hall clapped, yet she bowed, delighted.",
        "The concert was given for a deaf audience. They felt the music through the floor and "
        "applauded the way they do, by waving their raised hands.",
        [
            ("The audience was deaf.", 0.6, "deaf|could not hear|hearing impaired"),
            ("They applauded by waving their hands instead of clapping.", 0.4, "wave|waving;hand"),
        ],
        [
            ("Could the audience hear the music?", "No", "hear|hearing|deaf"),
            ("Did the audience enjoy the concert?", "Yes", "enjoy|like|love"),
            ("Did the audience show approval with their hands?", "Yes", "hand;approval|applau|show"),
        ],
    ),
    (
        "The Dry Swimmer",
        "A man dived into the pool and came out completely dry.",
        "The pool had been drained for repairs. The man was a workman who jumped down into the "
        "empty pool to fix the tiles.",
        [
            ("The pool was empty, with no water in it.", 0.7, "empty|drained|no water"),
            ("He was a worker going in to repair it.", 0.3, "worker|workman|repair|fix"),
        ],
        [
            ("Was there water in the pool?", "No", "water|empty|drained"),
            ("Was he there for work?", "Yes", "work|job|repair|fix"),
            ("Was he wearing a special suit?", "No", "suit|wetsuit"),
        ],
    ),
    (
        "The Unopened Gift",
        "Every year a woman receives a parcel from her brother and throws it away without opening it. "
        "She is happy each time.",
        "Her brother lives abroad and cannot call. The parcel is a sign he is alive and well; she "
        "already knows it holds the same cheap biscuits she dislikes.",
        [
            ("The parcel proves her brother is alive and well.", 0.6, "alive|well|safe;brother"),
            ("She knows what is inside and does not want it.", 0.4, "know|inside|same;not want|dislike"),
        ],
        [
            ("Is her brother far away?", "Yes", "far|abroad|away|another country"),
            ("Does she know what is in the parcel?", "Yes", "know;parcel|inside|contents"),
            ("Is the parcel dangerous?", "No", "dangerous|bomb|poison"),
        ],
    ),
    (
        "The Late Train",
        "A commuter was delighted when her train was two hours late.",
        "She had overslept and was sure she had missed an important exam. The delay meant she "
        "still caught the train and arrived on time.",
        [
            ("She was running late herself because she overslept.", 0.5, "overslept|late|slept"),
            ("The delay let her still catch it and reach her exam on time.", 0.5, "catch|caught|on time;exam"),
        ],
        [
            ("Was she late herself?", "Yes", "she|her;late|overslept"),
            ("Was she going to an important appointment?", "Yes", "important|exam|appointment|interview"),
            ("Did she dislike her job?", "No", "job|work;dislike|hate"),
        ],
    ),
    (
        "The Lighthouse Dark",
        "A lighthouse keeper switched off the light on purpose one night and saved many lives.",
        "A fire was spreading on the island and the ships were heading to the harbour for "
        "rescue. The keeper switched the light off as the agreed signal that the ships must not "
        "approach because the harbour was on fire.",
        [
            ("The harbour was on fire.", 0.5, "fire|burning|burn"),
            ("Turning off the light was a signal warning ships not to approach.", 0.5, "signal|warn|warning;ship"),
        ],
        [
            ("Was there a danger on land?", "Yes", "danger|fire|land|island|harbour"),
            ("Was switching off the light a message?", "Yes", "message|signal|warn"),
            ("Was the keeper drunk?", "No", "drunk|asleep|mistake"),
        ],
    ),
    (
        "The Broken Watch",
        "A man smashed his favourite watch with a hammer and then smiled in relief.",
        "A kidnapper had hidden a tracking device in the watch he was given as a gift. Destroying "
        "it was the only way to stop being followed.",
        [
            ("A tracking device was hidden inside the watch.", 0.6, "track|tracker|bug|gps;watch|inside"),
            ("He destroyed it to stop someone following him.", 0.4, "follow|spy|followed|track"),
        ],
        [
            ("Was something hidden in the watch?", "Yes", "hidden|hide|inside;watch"),
            ("Was he being followed?", "Yes", "follow|spy|watched|track"),
            ("Was the watch broken before?", "No", "broken before|already broken|stopped working"),
        ],
    ),
    (
        "The Empty Restaurant",
        "A chef cooked a feast every evening for a restaurant where no customer ever came, and he was paid well.",
        "The restaurant was a film set. The chef cooked real food for the actors in a long "
        "running television series set in a restaurant.",
        [
            ("The restaurant was a film set.", 0.6, "film|movie|set|television|tv|show"),
            ("He cooked for actors in a series.", 0.4, "actor|actors;series|show|film"),
        ],
        [
            ("Was the restaurant real?", "No", "real|fake|restaurant"),
            ("Were cameras involved?", "Yes", "camera|film|movie|television|tv"),
            ("Did anyone eat the food?", "Yes", "eat|ate|food"),
        ],
    ),
    (
        "The Wrong Birthday",
        "A boy celebrated his tenth birthday although he was forty years old.",
        "He was born on 29 February, so his real birthday comes only once every four years.",
        [
            ("He was born on 29 February, a leap day.", 0.7, "29 february|february 29|leap"),
            ("His birthday only comes every four years.", 0.3, "four years|every four|once every"),
        ],
        [
            ("Is the date of his birth unusual?", "Yes", "date|born|birth;unusual|special|rare"),
            ("Was he born in February?", "Yes", "february"),
            ("Is he lying about his age?", "No", "lying|lie|age"),
        ],
    ),
    (
        "The Red Footprints",
        "A woman followed a line of red footprints through her house and laughed.",
        "Her little son had stepped into a tin of red paint in the garage and walked through the "
        "house. It was paint, not blood.",
        [
            ("The red footprints were paint, not blood.", 0.6, "paint"),
            ("Her child stepped in it and walked through the house.", 0.4, "child|son|kid;step|stepped|walk"),
        ],
        [
            ("Was it blood?", "No", "blood"),
            ("Was it paint?", "Yes", "paint"),
            ("Did a child make the footprints?", "Yes", "child|son|kid|boy"),
        ],
    ),
    (
        "The Snow Letter",
        "A man read a letter, looked at the snow outside and called off his wedding.",
        "The letter was from his fiancee, written months ago, promising she would arrive before "
        "the first snow. The snow had fallen and she had not come, so he knew she had left him.",
        [
            ("His fiancee promised to arrive before the first snow.", 0.5, "promise|promised;snow"),
            ("She did not come, so he knew she had left him.", 0.5, "left him|leave him|not come|did not come"),
        ],
        [
            ("Was the letter from his fiancee?", "Yes", "letter|fiancee|bride"),
            ("Did the snow matter because of a promise?", "Yes", "promise|deadline"),
            ("Did she die?", "No", "die|dead|death"),
        ],
    ),
    (
        "The Lost Dog's Dinner",
        "A woman set a full bowl of food outside every night for a dog that had died years ago.",
        "The bowl was for the stray foxes that visited her garden; she kept her old dog's bowl "
        "because she liked watching them eat from it.",
        [
            ("The food was really for wild foxes.", 0.7, "fox|foxes|wild animal"),
            ("She reused her dead dog's bowl.", 0.3, "bowl;dog"),
        ],
        [
            ("Was the food for another animal?", "Yes", "another animal|other animal|fox|wild"),
            ("Does she think the dog is alive?", "No", "think;alive|still"),
            ("Is she grieving?", "No", "griev|sad|mourn"),
        ],
    ),
    (
        "The Closed Umbrella",
        "It rained all day. A man walked outside for an hour with a closed umbrella and stayed dry.",
        "He was walking through a covered shopping arcade; the umbrella was one he had just bought.",
        [
            ("He was walking under a roof in a covered arcade.", 0.7, "roof|covered|arcade|indoor|inside"),
            ("The umbrella was newly bought.", 0.3, "bought|buy|new|shop"),
        ],
        [
            ("Was he under cover?", "Yes", "cover|covered|roof|inside|indoor"),
            ("Was he bald or wearing a hat?", "No", "bald|hat|hood"),
            ("Had he just bought the umbrella?", "Yes", "bought|buy|shop"),
        ],
    ),
    (
        "The Cheering Loser",
        "A runner finished last in a race and the whole stadium cheered louder than for the winner.",
        "She had lost her leg in an accident a year before and had learned to run again with a "
        "prosthetic; finishing at all was the victory.",
        [
            ("She had lost a leg and ran with a prosthetic.", 0.6, "leg|prosthetic|artificial leg"),
            ("Finishing the race was an achievement after an accident.", 0.4, "accident;finish|finishing"),
        ],
        [
            ("Did she have a disability?", "Yes", "disability|disabled|injury|injured|leg"),
            ("Was she famous?", "No", "famous|celebrity"),
            ("Was there an accident?", "Yes", "accident|crash"),
        ],
    ),
    (
        "The Painted Window",
        "A shop owner painted all his windows black and his sales tripled.",
        "He ran a photo-developing shop; the dark room kept customers' films safe, and a sign "
        "saying 'darkroom open' drew photographers in.",
        [
            (
                "His shop developed photographs and needed darkness.",
                0.7,
                "photo|photograph|film|darkroom;dark|darkness|light",
            ),
            ("Photographers came because of the darkroom.", 0.3, "photographer|darkroom"),
        ],
        [
            ("Did the shop need to keep light out?", "Yes", "light|dark|darkness"),
            ("Was it a photography shop?", "Yes", "photo|camera|film|photography"),
            ("Was he hiding something illegal?", "No", "illegal|crime|hide|hiding"),
        ],
    ),
    (
        "The Stopped Clocks",
        "Every clock in the old house showed the same time, 8:15, and nobody ever changed them.",
        "The owner's daughter was born at 8:15. After she moved away the mother stopped every "
        "clock at that minute to remember her arrival.",
        [
            ("8:15 was the moment her daughter was born.", 0.6, "born|birth;daughter|child"),
            ("The mother stopped the clocks in memory of her daughter.", 0.4, "memory|remember|stopped"),
        ],
        [
            ("Is the time important to the owner?", "Yes", "important|special|meaning|time"),
            ("Did someone die at that time?", "No", "die|died|death"),
            ("Is it connected to a birth?", "Yes", "birth|born"),
        ],
    ),
    (
        "The Unsent Reply",
        "A soldier wrote to his mother every week for a year but never received an answer, and he was glad.",
        "He had agreed with his mother that she would write only if something bad happened at "
        "home. Silence meant everyone was well.",
        [
            (
                "They agreed she would write only if something bad happened.",
                0.6,
                "only if|bad news|something bad|agreed",
            ),
            ("No answer meant all was well at home.", 0.4, "well|fine|safe"),
        ],
        [
            ("Was there an agreement between them?", "Yes", "agree|agreement|deal|promise"),
            ("Was his mother dead?", "No", "dead|died|death"),
            ("Did no reply mean good news?", "Yes", "good news|well|fine"),
        ],
    ),
    (
        "The Happy Flat Tyre",
        "A driver got a flat tyre on the highway and thanked his luck.",
        "While he was changing the tyre he saw, a little further on, that the bridge ahead had "
        "collapsed. Without the flat he would have driven into the river.",
        [
            ("The bridge ahead had collapsed.", 0.7, "bridge;collapsed|fallen|broken|collapse"),
            ("The flat tyre stopped him before he drove into danger.", 0.3, "stopped|stop|saved|danger|river"),
        ],
        [
            ("Was there a danger ahead?", "Yes", "danger|ahead|further"),
            ("Was a bridge involved?", "Yes", "bridge"),
            ("Did he win something?", "No", "win|won|prize|lottery"),
        ],
    ),
    (
        "The Two Cups",
        "Two friends drank the same poisoned tea. One died, the other lived.",
        "The poison was in the ice cubes. The survivor drank quickly before the ice melted; the "
        "other sipped slowly as the ice dissolved.",
        [
            ("The poison was in the ice.", 0.6, "ice"),
            (
                "One drank fast before it melted and the other drank slowly.",
                0.4,
                "fast|quickly|slowly;melt|melted|dissolv",
            ),
        ],
        [
            ("Was the poison in the tea itself?", "No", "tea|itself"),
            ("Did the speed of drinking matter?", "Yes", "speed|fast|quickly|slowly"),
            ("Was one of them immune?", "No", "immune|antidote|resistant"),
        ],
    ),
    (
        "The Hotel Knock",
        "A woman in a hotel heard a knock. A man said 'Sorry, I thought this was my room' and left. "
        "She called security at once.",
        "Nobody knocks on their own room door. His knocking showed he knew the room was not his, "
        "so he was checking whether anyone was inside, likely to rob it.",
        [
            ("People do not knock on their own door, so he was lying.", 0.6, "knock;own|his own"),
            ("He was checking if the room was empty to steal.", 0.4, "steal|rob|thief|burglar|empty"),
        ],
        [
            ("Was he a thief?", "Yes", "thief|steal|rob|burglar|criminal"),
            ("Was the knock suspicious?", "Yes", "knock;suspicious|strange|odd"),
            ("Did she know the man?", "No", "know|knew|recogni"),
        ],
    ),
    (
        "The Winning Ticket",
        "A man won the lottery and cried in despair.",
        "He had thrown the ticket away that morning, convinced he had lost, and the rubbish truck "
        "had already taken it.",
        [
            ("He had thrown away the ticket.", 0.7, "threw|thrown|throw|rubbish|trash|lost the ticket"),
            ("He could not claim the prize without it.", 0.3, "claim|prize|money"),
        ],
        [
            ("Does he still have the ticket?", "No", "still have|ticket"),
            ("Did he throw it away?", "Yes", "throw|threw|thrown|rubbish|trash|bin"),
            ("Was he in debt?", "No", "debt|owe"),
        ],
    ),
    (
        "The Mirror Message",
        "A nurse read the word 'HELP' on a patient's chart, smiled and did nothing.",
        "The patient had written 'PLEH', a joke name the ward used for a cat that visited; seen in "
        "the mirror behind the bed it read HELP. The nurse knew the game.",
        [
            ("The word was written backwards and seen in a mirror.", 0.6, "mirror|backward|backwards|reversed"),
            ("It was a joke about a cat on the ward.", 0.4, "joke|cat|game"),
        ],
        [
            ("Was the patient in danger?", "No", "danger|trouble|dying"),
            ("Was a mirror involved?", "Yes", "mirror|reflection"),
            ("Was it a joke?", "Yes", "joke|game|prank|fun"),
        ],
    ),
    (
        "The Burnt Map",
        "An explorer burned his only map in the middle of the desert and survived.",
        "He was lost at night and freezing; burning the map made a signal fire that a rescue helicopter saw.",
        [
            ("The fire was a signal for rescuers.", 0.7, "signal;rescue|rescuer|helicopter|plane"),
            ("He was lost in the cold night.", 0.3, "lost;cold|night|freezing"),
        ],
        [
            ("Did the fire help him get found?", "Yes", "found|seen|rescue|signal"),
            ("Was the map wrong?", "No", "wrong|fake|useless"),
            ("Was it night?", "Yes", "night|dark"),
        ],
    ),
    (
        "The Smiling Thief",
        "A thief stole a car and returned it the next day, filled up with fuel and washed.",
        "He was a doctor whose own car broke down; he took the neighbour's car to rush a patient "
        "to hospital and returned it with thanks.",
        [
            ("He took it in an emergency to bring a patient to hospital.", 0.7, "emergency|patient|hospital"),
            ("He returned it as thanks to the owner.", 0.3, "thanks|thank|grateful|returned"),
        ],
        [
            ("Was it an emergency?", "Yes", "emergency|urgent|hurry"),
            ("Did he want to keep the car?", "No", "keep|sell"),
            ("Was someone ill or hurt?", "Yes", "ill|sick|hurt|patient|injured"),
        ],
    ),
    (
        "The Cold Soup",
        "A man tasted soup in a restaurant, went pale and left without paying.",
        "The soup tasted exactly like his late wife's recipe. He learned the new cook was the "
        "daughter she had given up for adoption, whom he never knew existed.",
        [
            ("The soup tasted like his late wife's recipe.", 0.5, "wife|recipe"),
            ("The cook was his wife's secret daughter.", 0.5, "daughter|child;secret|adopt|adoption|cook"),
        ],
        [
            ("Did the soup remind him of someone?", "Yes", "remind|someone|memory|wife"),
            ("Was the soup poisoned?", "No", "poison|poisoned"),
            ("Is the cook related to him?", "Yes", "related|family|daughter"),
        ],
    ),
    (
        "The Upside-Down Painting",
        "A gallery hung a famous painting upside down for a month and visitors praised it more.",
        "The painting was abstract, so nobody could tell; the curator had made the mistake, and "
        "critics praised the 'new angle'.",
        [
            ("The painting was abstract so nobody noticed.", 0.6, "abstract"),
            ("The curator hung it wrong by mistake.", 0.4, "mistake|accident|error"),
        ],
        [
            ("Was it done on purpose?", "No", "purpose|deliberate|intention"),
            ("Was the painting abstract?", "Yes", "abstract|modern"),
            ("Was the painting a fake?", "No", "fake|forgery|copy"),
        ],
    ),
    (
        "The Empty Seat",
        "A man bought two cinema tickets for every film but always sat next to an empty seat.",
        "He bought the second seat for his late wife, who had loved films, to keep their Friday ritual alive.",
        [
            ("The second seat was for his wife who had died.", 0.7, "wife;died|dead|late|death"),
            ("He kept their old cinema ritual.", 0.3, "ritual|tradition|habit"),
        ],
        [
            ("Was the seat for someone who died?", "Yes", "died|dead|death|late"),
            ("Was it for comfort or space?", "No", "comfort|space|tall|room"),
            ("Was it a tradition?", "Yes", "tradition|ritual|habit"),
        ],
    ),
    (
        "The Tiny Footprint",
        "Scientists found a single tiny footprint on the Moon and were not surprised.",
        "It was the print of a toy astronaut's boot that an engineer had secretly packed and left "
        "as a memorial for his son.",
        [
            ("The footprint came from a toy left on purpose.", 0.6, "toy"),
            ("An engineer left it as a memorial for his son.", 0.4, "memorial|son|memory"),
        ],
        [
            ("Was it made by a living creature?", "No", "living|alive|creature|alien"),
            ("Was it a toy?", "Yes", "toy|doll|figure"),
            ("Did someone leave it deliberately?", "Yes", "deliberate|purpose|left"),
        ],
    ),
    (
        "The Hungry Baker",
        "A baker threw away a whole batch of perfect bread and was praised for it.",
        "He found a piece of broken glass from a lamp near the dough; he couldn't be sure none was "
        "inside, so he threw everything out for safety.",
        [
            ("Broken glass may have fallen into the dough.", 0.7, "glass"),
            ("He threw it away for the customers' safety.", 0.3, "safety|safe|protect"),
        ],
        [
            ("Was the bread dangerous?", "Yes", "dangerous|danger|unsafe"),
            ("Was glass involved?", "Yes", "glass"),
            ("Did the bread taste bad?", "No", "taste|bad|burnt"),
        ],
    ),
    (
        "The Slow Ambulance",
        "An ambulance drove very slowly to the hospital with its siren off, and the patient lived.",
        "The patient had a spinal injury; any bump could paralyse her, so the crew drove gently on purpose.",
        [
            ("The patient had a spine injury.", 0.6, "spine|spinal|back|neck"),
            ("Driving slowly avoided bumps that could paralyse her.", 0.4, "bump|bumps|paralys|gentle"),
        ],
        [
            ("Was the slowness deliberate?", "Yes", "deliberate|purpose|intention"),
            ("Was the ambulance broken?", "No", "broken|fault|fuel"),
            ("Was the injury to the back?", "Yes", "back|spine|spinal|neck"),
        ],
    ),
    (
        "The Second Funeral",
        "A woman attended the funeral of a man she had never met and cried more than anyone.",
        "He had been her organ donor. His heart now beats in her chest, and she came to thank his family.",
        [
            ("The man was her organ donor.", 0.7, "donor|donat|transplant|organ"),
            ("His heart now beats in her chest.", 0.3, "heart"),
        ],
        [
            ("Did he save her life?", "Yes", "save|saved|life"),
            ("Were they related?", "No", "related|family|relative"),
            ("Was it about a transplant?", "Yes", "transplant|donor|organ|heart"),
        ],
    ),
    (
        "The Bell at Midnight",
        "A church bell rang at midnight although the church was locked and empty.",
        "A cat had climbed the bell tower after a pigeon and got tangled in the rope.",
        [
            ("A cat got into the tower and pulled the rope.", 0.7, "cat;rope|tower"),
            ("It was chasing a pigeon.", 0.3, "pigeon|bird"),
        ],
        [
            ("Was a person in the church?", "No", "person|someone|human"),
            ("Was an animal involved?", "Yes", "animal|cat|bird"),
            ("Was it a ghost?", "No", "ghost|spirit"),
        ],
    ),
    (
        "The Grateful Goalkeeper",
        "A goalkeeper let in an easy goal in the final and his team's fans thanked him.",
        "The match was a charity game against a team of sick children; letting them score was the whole point.",
        [
            ("It was a charity match against sick children.", 0.7, "charity|children|sick kids|kid"),
            ("He let them score on purpose.", 0.3, "purpose|deliberate|let them"),
        ],
        [
            ("Was it a normal competitive match?", "No", "normal|competitive|real"),
            ("Were children involved?", "Yes", "child|children|kid"),
            ("Was he bribed?", "No", "bribe|bribed|money"),
        ],
    ),
    (
        "The Frozen Fish",
        "A fisherman caught nothing all day on the frozen lake and went home rich.",
        "He was not fishing but guiding tourists who paid to try ice fishing with him.",
        [
            ("He was a guide for paying tourists.", 0.7, "guide|tourist|tourists;pay|paid|paying"),
            ("The tourists came to try ice fishing.", 0.3, "ice fishing|experience"),
        ],
        [
            ("Did someone pay him?", "Yes", "pay|paid|money"),
            ("Were there tourists?", "Yes", "tourist|visitor|customer"),
            ("Did he find treasure?", "No", "treasure|gold|found"),
        ],
    ),
    (
        "The Upstairs Neighbour",
        "A woman complained that her upstairs neighbour was too quiet and called the police.",
        "The neighbour, an old man who always played the radio, had fallen silent for two days; she "
        "feared he was hurt. He had collapsed and the police saved him.",
        [
            ("The neighbour was usually noisy and suddenly silent.", 0.4, "usually|always|radio;silent|quiet"),
            ("She feared he had collapsed, and the police saved him.", 0.6, "collapsed|hurt|fallen|fall|ill"),
        ],
        [
            ("Was the silence unusual?", "Yes", "unusual|strange|normally|usually"),
            ("Was the neighbour in trouble?", "Yes", "trouble|hurt|ill|collapsed"),
            ("Did she dislike him?", "No", "dislike|hate|angry"),
        ],
    ),
    (
        "The Wet Letter",
        "A woman received a letter with the ink smudged by water and knew her son was alive.",
        "Her son was a sailor lost at sea. Only seawater could have smudged it that way: he had "
        "written it on a raft and put it in a bottle.",
        [
            ("Her son was lost at sea and wrote from a raft.", 0.5, "sea|raft|sailor;lost|son"),
            ("The letter came in a bottle, smudged by seawater.", 0.5, "bottle"),
        ],
        [
            ("Was her son at sea?", "Yes", "sea|ocean|ship|sailor"),
            ("Did the letter come by post?", "No", "post|mail|postman"),
            ("Was it in a bottle?", "Yes", "bottle"),
        ],
    ),
    (
        "The Open Cage",
        "A zookeeper left a lion's cage open all night and was given a medal.",
        "A fire broke out in the zoo; by opening the cages he let the animals escape into the "
        "fenced park instead of burning.",
        [
            ("There was a fire in the zoo.", 0.6, "fire|burning"),
            ("Opening the cages saved the animals.", 0.4, "saved|save|escape|rescue"),
        ],
        [
            ("Was there an emergency?", "Yes", "emergency|fire|danger"),
            ("Did the lion hurt anyone?", "No", "hurt|attack|kill"),
            ("Was it to save the animals?", "Yes", "save|rescue|protect"),
        ],
    ),
    (
        "The Backwards Clock",
        "A barber hung a clock with reversed numbers on the wall and customers never complained.",
        "Customers see the clock only in the mirror while sitting in the chair, where it reads normally.",
        [
            ("Customers see the clock in the mirror.", 0.7, "mirror"),
            ("In the mirror the reversed clock reads correctly.", 0.3, "reads|correct|normal|normally"),
        ],
        [
            ("Do customers look at the clock directly?", "No", "directly|look"),
            ("Is a mirror involved?", "Yes", "mirror|reflection"),
            ("Is the clock broken?", "No", "broken|wrong"),
        ],
    ),
    (
        "The Missing Ring",
        "A woman lost her wedding ring in the garden and found it years later on a carrot.",
        "The ring had fallen into the soil; a carrot grew through it.",
        [
            ("The ring fell into the soil of the vegetable garden.", 0.4, "soil|earth|ground|dirt"),
            ("A carrot grew through the ring.", 0.6, "grew|grow|growing;carrot"),
        ],
        [
            ("Did someone steal it?", "No", "steal|stole|thief"),
            ("Was it in the ground?", "Yes", "ground|soil|earth|dirt|buried"),
            ("Did a vegetable grow through it?", "Yes", "grow|grew|vegetable|carrot"),
        ],
    ),
    (
        "The Quiet Rooster",
        "A farmer was relieved the morning his rooster did not crow.",
        "He had a newborn baby who finally slept; the night before he had moved the rooster to the far barn.",
        [
            ("He had a newborn baby who needed sleep.", 0.7, "baby|newborn|infant;sleep|slept"),
            ("He had moved the rooster away.", 0.3, "moved|barn|away"),
        ],
        [
            ("Is there a baby?", "Yes", "baby|infant|child"),
            ("Did the rooster die?", "No", "die|dead|died|kill"),
            ("Did he move the rooster?", "Yes", "move|moved|barn"),
        ],
    ),
    (
        "The Long Swim",
        "A girl swam across a lake every morning for a year and never reached the other side.",
        "She swam in an indoor pool with a current machine, training for a channel crossing; she called it her lake.",
        [
            ("She swam against a current machine in a pool.", 0.7, "current|machine|endless pool|treadmill"),
            ("She was training for a big crossing.", 0.3, "training|train|crossing"),
        ],
        [
            ("Was it a real lake?", "No", "real|lake"),
            ("Was she training?", "Yes", "train|training|practice"),
            ("Was a machine involved?", "Yes", "machine|current|pump"),
        ],
    ),
    (
        "The Generous Robber",
        "A robber broke into a house, left money on the table, and took nothing.",
        "Years earlier, as a hungry boy, he had stolen food from that same family. Now rich, he "
        "came back to repay them.",
        [
            ("He had stolen from the same family as a child.", 0.5, "stolen|stole|steal;child|boy|young"),
            ("He returned to repay his old debt.", 0.5, "repay|pay back|debt|guilt"),
        ],
        [
            ("Did he know the family?", "Yes", "know|knew|family"),
            ("Was it repayment?", "Yes", "repay|repayment|pay back|debt"),
            ("Was it a trap?", "No", "trap|trick"),
        ],
    ),
    (
        "The Whistling Driver",
        "A bus driver whistled the same tune at every stop and passengers started to rely on it.",
        "One regular passenger was blind; the tune told him which stop it was, each stop having its own melody.",
        [
            ("A blind passenger used the tunes to know the stop.", 0.7, "blind|could not see"),
            ("Each stop had its own melody.", 0.3, "melody|tune|song"),
        ],
        [
            ("Was a passenger unable to see?", "Yes", "see|blind|sight"),
            ("Was the driver bored?", "No", "bored|boring"),
            ("Did the tunes carry information?", "Yes", "information|signal|tell|told|stop"),
        ],
    ),
    (
        "The Sleeping Guard",
        "A museum guard slept every night on duty and was promoted.",
        "His job was to sleep in the museum's haunted exhibit for a TV challenge that brought record visitors.",
        [
            ("Sleeping there was part of a television challenge.", 0.7, "television|tv|show|challenge"),
            ("It brought record visitors to the museum.", 0.3, "visitor|visitors|record"),
        ],
        [
            ("Was sleeping his job?", "Yes", "job|work|paid"),
            ("Was he lazy?", "No", "lazy"),
            ("Was it filmed?", "Yes", "film|filmed|camera|television|tv"),
        ],
    ),
    (
        "The Shrinking House",
        "A man's house got smaller every year, yet he never moved.",
        "He was a child growing up; the house only seemed smaller as he grew taller.",
        [
            ("He was growing taller as a child.", 0.7, "grow|grew|growing|taller|child"),
            ("The house only seemed smaller.", 0.3, "seemed|seem|perception|felt"),
        ],
        [
            ("Did the house really shrink?", "No", "really|actually|shrink"),
            ("Was he a child?", "Yes", "child|kid|young|boy"),
            ("Did he get taller?", "Yes", "tall|taller|grow|grew"),
        ],
    ),
    (
        "The Bitter Medicine",
        "A mother gave her son a spoon of sugar and he burst into tears.",
        "He was diabetic and knew the sugar meant his blood sugar had dropped dangerously low again, "
        "a frightening sign.",
        [
            ("The boy had diabetes.", 0.6, "diabet"),
            ("His blood sugar had dropped dangerously low.", 0.4, "blood sugar|low|hypo"),
        ],
        [
            ("Was he ill?", "Yes", "ill|sick|disease|illness"),
            ("Did he dislike sugar?", "No", "dislike|hate|taste"),
            ("Was it a medical emergency?", "Yes", "medical|emergency|danger"),
        ],
    ),
    (
        "The Last Photo",
        "A photographer deleted the best picture of his career minutes after taking it.",
        "It showed a child climbing a dangerous cliff; he dropped the camera to help and, once "
        "safe, deleted it so no one would copy the stunt.",
        [
            ("The photo showed a child in danger.", 0.5, "child|kid;danger|dangerous|cliff"),
            ("He deleted it so no one would copy the stunt.", 0.5, "copy|imitate|stunt"),
        ],
        [
            ("Was someone in danger?", "Yes", "danger|risk|unsafe"),
            ("Was the photo illegal?", "No", "illegal|crime"),
            ("Did he worry about imitation?", "Yes", "copy|imitat|stunt"),
        ],
    ),
    (
        "The Crowded Beach",
        "On the hottest day of the year a beach was crowded but nobody swam.",
        "Sharks had been seen near the shore and the lifeguards closed the water; people stayed to watch them.",
        [
            ("Sharks had been seen near the shore.", 0.7, "shark"),
            ("Lifeguards closed the water.", 0.3, "lifeguard|closed|banned"),
        ],
        [
            ("Was the water dangerous?", "Yes", "dangerous|danger|unsafe"),
            ("Was the water polluted?", "No", "polluted|dirty|pollution"),
            ("Were there animals in the water?", "Yes", "animal|shark|fish"),
        ],
    ),
    (
        "The Phone in the Freezer",
        "A woman kept her phone in the freezer every night.",
        "She had accidentally dropped it in the bath years ago and freezing had saved it; now it "
        "was a superstition she kept.",
        [
            ("She once saved a wet phone by freezing it.", 0.6, "wet|water|bath|dropped"),
            ("It became a habit or superstition.", 0.4, "habit|superstition|ritual"),
        ],
        [
            ("Is it a habit?", "Yes", "habit|superstition|ritual"),
            ("Does she fear spying?", "No", "spy|spying|hack|track"),
            ("Was water involved?", "Yes", "water|wet|bath"),
        ],
    ),
    (
        "The Reversed Road Sign",
        "A town reversed all its road signs one night and traffic accidents fell.",
        "The signs were being repainted; drivers confused by the covered signs slowed down, and the "
        "town kept the lesson with slower limits.",
        [
            ("Confused drivers drove more slowly.", 0.7, "slow|slower|slowly;driver|drivers|drove"),
            ("The signs were being repainted.", 0.3, "repaint|paint|work"),
        ],
        [
            ("Did drivers slow down?", "Yes", "slow|slower"),
            ("Was it a prank?", "No", "prank|joke"),
            ("Was there maintenance work?", "Yes", "maintenance|work|repair|paint"),
        ],
    ),
    (
        "The Untouched Cake",
        "At a big party a beautiful cake stood on the table all night and nobody ate it.",
        "The cake was made of painted cardboard: a prop for the photographer, because the real "
        "cake had been dropped in the kitchen.",
        [
            ("The cake was fake, a prop.", 0.6, "fake|prop|cardboard|not real"),
            ("The real cake had been dropped.", 0.4, "dropped|ruined|fell"),
        ],
        [
            ("Was the cake real?", "No", "real|fake"),
            ("Was it for photos?", "Yes", "photo|photograph|picture|camera"),
            ("Was it poisoned?", "No", "poison"),
        ],
    ),
    (
        "The Librarian's Fine",
        "A librarian paid the late fine of a book returned fifty years late, and cried.",
        "The book had been borrowed by her late father as a boy; returning it with a note, his "
        "friend revealed stories about him she had never heard.",
        [
            ("The book had been borrowed by her father long ago.", 0.6, "father|dad"),
            ("It brought stories about him back to her.", 0.4, "stories|story|note|memory"),
        ],
        [
            ("Was the book connected to her family?", "Yes", "family|father|dad|related"),
            ("Was the fine huge?", "No", "huge|big|expensive|money"),
            ("Did a note come with it?", "Yes", "note|letter|message"),
        ],
    ),
    (
        "The Frosted Window",
        "A boy drew a face on a frosted bus window and the driver stopped the bus.",
        "The bus was shared with a girl who was deaf; the face was their sign that she had missed "
        "her stop and needed to get off.",
        [
            ("The drawing was a signal agreed with the driver.", 0.5, "signal|sign|code"),
            ("A deaf girl needed to get off at her stop.", 0.5, "deaf;stop|get off"),
        ],
        [
            ("Was the drawing a message?", "Yes", "message|signal|sign|code"),
            ("Was the boy misbehaving?", "No", "misbehav|naughty|trouble"),
            ("Was someone unable to hear?", "Yes", "hear|deaf"),
        ],
    ),
    (
        "The Perfect Score",
        "A student scored full marks and the teacher failed him.",
        "It was a test of handwriting for a calligraphy class; he had typed and printed his answers.",
        [
            (
                "The class graded handwriting, and he printed his answers.",
                0.7,
                "handwriting|calligraphy;print|printed|typed",
            ),
            ("The content was right but the form broke the rules.", 0.3, "rule|rules|form"),
        ],
        [
            ("Did he cheat by copying?", "No", "copy|copied|cheat"),
            ("Did it matter how the answers were written?", "Yes", "written|handwriting|how"),
            ("Was it a calligraphy class?", "Yes", "calligraphy|handwriting|writing"),
        ],
    ),
    (
        "The Melted Snowman",
        "A girl cried with joy when her snowman melted.",
        "Her father, a soldier, had promised to come home 'when the snowman melts'; spring had arrived and so had he.",
        [
            ("Her father promised to return when it melted.", 0.7, "father|dad;return|home|come"),
            ("Spring had come, and with it her father.", 0.3, "spring"),
        ],
        [
            ("Was a promise involved?", "Yes", "promise"),
            ("Did she hate winter?", "No", "hate|dislike|winter"),
            ("Was someone coming home?", "Yes", "home|return|coming"),
        ],
    ),
    (
        "The Noisy Library",
        "A library played loud music all afternoon and the librarians were proud.",
        "It was a sign-language reading day for deaf children, who felt the bass vibrations as part of a dance story.",
        [
            ("The visitors were deaf children.", 0.6, "deaf"),
            ("They felt the vibrations of the music.", 0.4, "vibration|feel|felt"),
        ],
        [
            ("Could the visitors hear the music?", "No", "hear|hearing"),
            ("Were children present?", "Yes", "child|children|kid"),
            ("Was the library closed?", "No", "closed|empty"),
        ],
    ),
    (
        "The Bare Christmas Tree",
        "A family kept their Christmas tree bare and called it their happiest Christmas.",
        "Their house had burned down weeks before; they had lost every decoration but everyone had escaped alive.",
        [
            ("Their house had burned down.", 0.5, "burn|burned|fire"),
            ("Everyone survived, which mattered more.", 0.5, "survived|alive|escaped|safe"),
        ],
        [
            ("Did they lose their belongings?", "Yes", "lose|lost|belongings"),
            ("Was there a fire?", "Yes", "fire|burn"),
            ("Did someone die?", "No", "die|died|dead|death"),
        ],
    ),
    (
        "The Wrong Name",
        "A man called his wife by another woman's name and she was thrilled.",
        "He had lost his memory after a stroke; the name was his wife's, but from her stage name "
        "years before, the first sign his memory was coming back.",
        [
            ("He had lost his memory.", 0.5, "memory|amnesia|forgot"),
            ("The name was her old stage name, so his memory was returning.", 0.5, "stage name|old name|her name"),
        ],
        [
            ("Was he ill?", "Yes", "ill|sick|stroke|illness"),
            ("Was he unfaithful?", "No", "unfaithful|affair|cheat"),
            ("Was the name hers in the past?", "Yes", "past|hers|old|stage"),
        ],
    ),
    (
        "The Waiting Room",
        "A doctor's waiting room was full every day, but no patient was ever called.",
        "The waiting room was heated in winter and the old doctor let homeless people sit there to keep warm.",
        [
            ("Homeless people came in to keep warm.", 0.7, "homeless|poor;warm|cold|heat"),
            ("The doctor allowed it out of kindness.", 0.3, "kind|kindness|allowed|let"),
        ],
        [
            ("Were they sick?", "No", "sick|ill|patient"),
            ("Was it cold outside?", "Yes", "cold|winter|warm"),
            ("Were they homeless?", "Yes", "homeless|poor|street"),
        ],
    ),
    (
        "The Cracked Egg",
        "A chef cracked one egg into a pan and refused to cook any more that day.",
        "The egg had a double yolk, which his late mother always said brought luck; he closed to celebrate.",
        [
            ("The egg had two yolks.", 0.6, "yolk|yolks;two|double"),
            ("It reminded him of his mother's saying about luck.", 0.4, "mother|luck"),
        ],
        [
            ("Was the egg unusual?", "Yes", "unusual|special|strange|double"),
            ("Was the egg rotten?", "No", "rotten|bad|spoil"),
            ("Was his mother involved?", "Yes", "mother|mom|family"),
        ],
    ),
    (
        "The Moving Island",
        "Sailors landed on a small island, lit a fire and the island sank.",
        "The 'island' was a huge sleeping whale covered in seaweed; the fire woke it and it dived.",
        [
            ("The island was really a whale.", 0.7, "whale|animal|creature"),
            ("The fire woke it and it dived.", 0.3, "woke|wake|dived|dive"),
        ],
        [
            ("Was the island alive?", "Yes", "alive|living|animal"),
            ("Was it an earthquake?", "No", "earthquake|volcano"),
            ("Was it a whale?", "Yes", "whale|fish|creature"),
        ],
    ),
    (
        "The Gift of Silence",
        "A musician gave his neighbour a concert ticket and the neighbour never went, to the musician's delight.",
        "The neighbour always complained about his practising; the ticket was for the evening the "
        "musician rehearsed at home, so he could play loudly at last.",
        [
            ("The neighbour complained about his practice noise.", 0.5, "complain|noise|loud"),
            ("The ticket got the neighbour out so he could rehearse.", 0.5, "rehearse|practice|play;out|away|gone"),
        ],
        [
            ("Was the ticket a trick to get the neighbour away?", "Yes", "away|out|trick|gone"),
            ("Were they friends?", "No", "friend|friends"),
            ("Did he want to practise?", "Yes", "practice|practise|rehearse|play"),
        ],
    ),
    (
        "The Twins' Race",
        "Twins were born minutes apart, yet the younger one celebrates her birthday a day earlier.",
        "They were born on a ship crossing the date line; the second twin was born just after the "
        "ship crossed it, on the previous calendar date.",
        [
            ("They were born on a ship crossing the date line.", 0.7, "date line|dateline|time zone"),
            ("Crossing it changed the calendar date between births.", 0.3, "calendar|date|day"),
        ],
        [
            ("Were they born while travelling?", "Yes", "travel|ship|boat|plane|moving"),
            ("Is there a mistake on the certificate?", "No", "mistake|error|certificate"),
            ("Does a time zone matter?", "Yes", "time zone|date line|timezone"),
        ],
    ),
    (
        "The Happy Flood",
        "A village was flooded and the villagers celebrated.",
        "The river had been dry for three years of drought; the flood meant their crops could grow again.",
        [
            ("There had been a long drought.", 0.6, "drought|dry"),
            ("The water would let their crops grow again.", 0.4, "crop|crops|farm|harvest"),
        ],
        [
            ("Had it been dry before?", "Yes", "dry|drought"),
            ("Was anyone hurt?", "No", "hurt|died|injured"),
            ("Are they farmers?", "Yes", "farmer|farm|crop"),
        ],
    ),
    (
        "The Open Door",
        "A man left his front door wide open every night in a city with many burglars, and was never robbed.",
        "His home was an empty apartment he used as bait: a police officer, he watched it from "
        "across the street to catch burglars.",
        [
            ("He was a police officer using the flat as bait.", 0.7, "police|officer|cop;bait|trap"),
            ("He watched from across the street to catch burglars.", 0.3, "watch|watched|catch"),
        ],
        [
            ("Was it a trap?", "Yes", "trap|bait"),
            ("Was there anything valuable inside?", "No", "valuable|inside"),
            ("Was he a policeman?", "Yes", "police|policeman|officer|cop"),
        ],
    ),
    (
        "The Borrowed Umbrella",
        "A woman lent her umbrella to a stranger and got it back a year later with a wedding invitation.",
        "The stranger was a young man who fell in love with the woman's daughter when he returned it "
        "the first time; the invitation was to their wedding.",
        [
            ("He fell in love with her daughter.", 0.7, "daughter;love"),
            ("They married, and the invitation was to their wedding.", 0.3, "wedding|marry|married"),
        ],
        [
            ("Did the stranger marry someone from her family?", "Yes", "marry|married|family|daughter"),
            ("Did he steal the umbrella?", "No", "steal|stole|stolen"),
            ("Did they meet again?", "Yes", "meet|again|return"),
        ],
    ),
]
