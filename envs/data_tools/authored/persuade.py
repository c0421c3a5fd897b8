"""Authored PersuadeGym claims (source of ``envs/data/persuade/*.jsonl``).

One row per claim the simulated user holds: the claim, the user's own argument for it, and
counter-arguments that can move them, each ``(argument, keyword groups, levels)``. Keyword
groups use the ``"a|b;c"`` shorthand (``;`` separates groups that must all be hit, ``|``
separates alternatives). Levels per claim sum to 6, so a user who starts at Strongly Agree is
moved to Strongly Disagree by all counter-arguments. Every fourth row goes to test.
"""

from __future__ import annotations

Counter = tuple[str, str, int]
CLAIMS: list[tuple[str, str, list[Counter]]] = [
    (
        "Homework should be banned in primary schools",
        "Young children need free time to play, and homework mostly causes stress at home.",
        [
            ("Short homework builds study habits and self-discipline early.", "habit|discipline", 2),
            ("Homework lets parents see what their child learns and get involved.", "parent;involve|see what", 2),
            (
                "Practice at home reinforces what was taught, which research links to better retention.",
                "reinforce|retention|practice",
                2,
            ),
        ],
    ),
    (
        "Cities should ban private cars from their centres",
        "Cars pollute, make streets dangerous and take space that people could use.",
        [
            ("Disabled and elderly people depend on cars to reach shops and doctors.", "disabled|elderly|mobility", 2),
            (
                "Shops in the centre lose customers and deliveries become harder.",
                "shop|business|retail;customer|deliver",
                2,
            ),
            ("Electric cars remove most of the pollution argument already.", "electric", 2),
        ],
    ),
    (
        "Social media does more harm than good",
        "It spreads misinformation, damages mental health and makes people lonely.",
        [
            (
                "Social media lets families and friends stay in touch across distances.",
                "family|friends;touch|connect",
                2,
            ),
            (
                "Activists used social media to organise movements and expose abuses.",
                "activist|movement|organise|organize",
                2,
            ),
            ("Small businesses reach customers cheaply through social media.", "small business|entrepreneur", 2),
        ],
    ),
    (
        "Zoos should be abolished",
        "Keeping wild animals in cages is cruel and they never live naturally.",
        [
            ("Breeding programmes in zoos have saved species from extinction.", "breeding|extinction|endangered", 3),
            ("Zoos fund conservation research and protect habitats in the wild.", "conservation|research|habitat", 2),
            ("Visiting a zoo teaches children to care about wildlife.", "teach|education|children", 1),
        ],
    ),
    (
        "Nuclear power is too dangerous to use",
        "Accidents like Chernobyl and Fukushima show the risks are unacceptable.",
        [
            ("Per unit of energy, nuclear causes fewer deaths than coal or gas.", "deaths|death rate|fewer deaths", 2),
            (
                "Modern reactor designs shut down passively and cannot melt down like old ones.",
                "modern|passive|new design",
                2,
            ),
            ("Nuclear emits almost no carbon, so it fights climate change.", "carbon|climate|emission", 2),
        ],
    ),
    (
        "Video games make children violent",
        "Games reward shooting and fighting, so kids learn aggression.",
        [
            ("Youth violence fell while video game sales rose for decades.", "fell|declined|dropped|decreased", 2),
            (
                "Large studies find no lasting link between games and real aggression.",
                "study|studies|research|evidence",
                2,
            ),
            ("Many games teach teamwork, problem solving and patience.", "teamwork|problem solving|cooperat", 2),
        ],
    ),
    (
        "Everyone should become vegetarian",
        "Eating meat is cruel to animals and bad for the planet.",
        [
            (
                "Some people cannot digest plant proteins or have medical diets.",
                "medical|allerg|digest|health condition",
                2,
            ),
            (
                "In some regions, such as the Arctic, plants barely grow and people rely on animals.",
                "arctic|region|cannot grow|barely grow",
                2,
            ),
            (
                "Small farms and grazing can be sustainable and protect grassland.",
                "grazing|small farm|sustainable|grassland",
                2,
            ),
        ],
    ),
    (
        "The voting age should be lowered to 16",
        "Sixteen-year-olds pay taxes and their future is affected by politics.",
        [
            ("Most 16-year-olds still live with parents who strongly influence their vote.", "parents|influence", 2),
            (
                "At 16 few people have studied how government works, so turnout is very low.",
                "turnout|government works|civic",
                2,
            ),
            (
                "We set 18 as the age of adulthood for contracts and other rights; voting should match.",
                "adult|contract|consisten",
                2,
            ),
        ],
    ),
    (
        "Space exploration is a waste of money",
        "The billions spent on rockets should go to poverty and health on Earth.",
        [
            ("Space research gave us satellites for weather forecasts and GPS.", "satellite|gps|weather", 2),
            (
                "Space budgets are tiny, well under one percent of government spending.",
                "percent|tiny|small share|fraction",
                2,
            ),
            (
                "Spin-off technologies like water filters and medical imaging came from space programmes.",
                "spin off|spinoff|technolog|medical imaging",
                2,
            ),
        ],
    ),
    (
        "Remote work is worse than office work",
        "People are less productive and lonely when working from home.",
        [
            ("Several studies found remote workers are as productive or more.", "productiv", 2),
            ("Skipping the commute saves hours and reduces traffic emissions.", "commut", 2),
            (
                "Remote work lets companies hire talent from anywhere, including disabled workers.",
                "hire|talent|anywhere",
                2,
            ),
        ],
    ),
    (
        "School uniforms should be mandatory",
        "Uniforms remove social pressure over clothes and build school spirit.",
        [
            ("Uniforms are expensive for poor families who must buy special items.", "expensive|cost|afford", 2),
            (
                "Studies find no clear effect of uniforms on grades or behaviour.",
                "grades|behaviour|behavior|no effect",
                2,
            ),
            ("Children learn to express their identity through clothing.", "express|identity|individual", 2),
        ],
    ),
    (
        "Tourism does more harm than good to local communities",
        "Tourists drive up rents, crowd streets and damage nature.",
        [
            ("Tourism provides jobs and income for millions in poorer regions.", "jobs|income|employ", 2),
            ("Tourist fees fund the protection of parks and heritage sites.", "fees|fund|heritage", 2),
            ("Meeting visitors builds understanding between cultures.", "culture|understanding|exchange", 2),
        ],
    ),
    (
        "Standardized tests should be abolished",
        "Tests measure test-taking skill, not intelligence, and stress students.",
        [
            ("Tests give an objective comparison across schools with different grading.", "objective|compar|fair", 2),
            ("Test results reveal which schools are failing poor students.", "failing|inequal|reveal|poor students", 2),
            (
                "Without tests, admissions rely more on connections and expensive extras.",
                "admission|connections|extras",
                2,
            ),
        ],
    ),
    (
        "Professional athletes are overpaid",
        "No one who plays a game deserves millions while nurses earn little.",
        [
            ("Athletes' pay comes from the huge revenue fans generate, not from taxes.", "revenue|fans|tickets", 2),
            ("Careers are short and often end with injuries.", "short|injur|career", 2),
            (
                "Only a tiny elite earns millions; most professionals earn modest wages.",
                "elite|modest|most players|minority",
                2,
            ),
        ],
    ),
    (
        "Plastic bags should be banned",
        "Plastic bags pollute oceans and kill wildlife.",
        [
            ("Paper and cotton bags need far more energy and water to make.", "paper|cotton;energy|water", 2),
            ("Many people reuse plastic bags as bin liners, which would otherwise be bought.", "reuse|bin liner", 2),
            (
                "Most ocean plastic comes from fishing gear and poor waste systems, not shoppers' bags.",
                "fishing|waste system|waste management",
                2,
            ),
        ],
    ),
    (
        "Children should not have smartphones before age 14",
        "Phones expose kids to addiction, bullying and harmful content.",
        [
            ("Phones let parents reach children and track them for safety.", "safety|reach|track|emergency", 2),
            ("Parental controls can block harmful content and limit screen time.", "parental control|block|limit", 2),
            ("Kids without phones are excluded from their friends' group chats.", "exclude|left out|group chat", 2),
        ],
    ),
    (
        "Self-driving cars should be banned",
        "Computers cannot handle every situation on the road and will cause crashes.",
        [
            ("Human error causes over ninety percent of road crashes.", "human error|ninety|90", 2),
            ("Self-driving cars give blind and elderly people independence.", "blind|elderly|independen", 2),
            ("They can be tested and regulated step by step rather than banned.", "regulat|step by step|gradual", 2),
        ],
    ),
    (
        "Art subjects are less important than science in schools",
        "Science leads to jobs and progress, art is just a hobby.",
        [
            ("Creative industries employ millions and earn large export revenue.", "creative industr|export|employ", 2),
            ("Art trains creativity, which scientists and engineers need too.", "creativit|train", 2),
            ("Students who struggle in science may find confidence through art.", "confidence|struggle", 2),
        ],
    ),
    (
        "Fast food should be taxed heavily",
        "Fast food causes obesity, and a tax would make people eat healthier.",
        [
            (
                "Such taxes hit poor families hardest, since they spend more of their income on food.",
                "poor|regressive|low income",
                2,
            ),
            (
                "Denmark repealed its fat tax because people simply shopped across the border.",
                "denmark|border|repeal",
                2,
            ),
            ("Education and cheaper vegetables work better than punishing choices.", "vegetable|subsid|education", 2),
        ],
    ),
    (
        "Museums should return artefacts to their countries of origin",
        "Many artefacts were taken by colonial powers and belong to their home nations.",
        [
            ("Some objects were bought legally and are safest in well-funded museums.", "legal|bought|purchas", 2),
            (
                "Large museums let millions from every country see world heritage in one place.",
                "millions|visitors|one place",
                2,
            ),
            ("Some origin regions are in conflict, where objects could be destroyed.", "conflict|war|destroy", 2),
        ],
    ),
    (
        "Public transport should be free",
        "Free transport would cut traffic and help poor people move around.",
        [
            ("Someone still pays: free fares mean higher taxes or cuts elsewhere.", "taxes|someone pays|fund", 2),
            (
                "Experiments found free fares mostly attract walkers and cyclists, not drivers.",
                "walkers|cyclists|walk|cycl",
                2,
            ),
            (
                "Fare money pays for maintenance; free systems often become crowded and run down.",
                "maintenance|crowded|run down",
                2,
            ),
        ],
    ),
    (
        "Reality TV is harmful to society",
        "It rewards bad behaviour and humiliates people for entertainment.",
        [
            ("Viewers know it is entertainment and watch it to relax.", "relax|entertainment|escape", 2),
            ("Cooking and renovation shows teach real skills.", "cooking|renovation|skills", 2),
            ("Participants volunteer and are paid; they choose to take part.", "volunteer|choose|consent|paid", 2),
        ],
    ),
    (
        "Animal testing should be banned",
        "Testing on animals is cruel and results often do not apply to humans.",
        [
            ("Most vaccines and many life-saving drugs were developed with animal tests.", "vaccine|drugs|medicine", 3),
            (
                "Strict welfare rules already require reducing and replacing animal tests.",
                "welfare|rules|regulat|replace",
                2,
            ),
            ("A ban would move testing to countries with weaker protections.", "move|countries|weaker|abroad", 1),
        ],
    ),
    (
        "Printed books will disappear",
        "E-books are cheaper, lighter and available instantly.",
        [
            ("Printed book sales have been stable or growing for years.", "sales|stable|growing", 2),
            ("Many readers remember more when reading on paper.", "remember|comprehension|memory", 2),
            ("Books need no battery and last for centuries.", "battery|last|centuries", 2),
        ],
    ),
    (
        "A four-day work week would hurt the economy",
        "Working less means producing less and companies would lose money.",
        [
            ("Trials in Iceland and the UK kept output the same with a shorter week.", "trial|iceland|uk", 2),
            ("Rested workers take fewer sick days and make fewer mistakes.", "sick|rested|mistake|burnout", 2),
            ("A better work-life balance helps firms keep their staff.", "balance|retain|keep staff|turnover", 2),
        ],
    ),
    (
        "Competitive sports should be removed from schools",
        "Competition makes children who lose feel worthless.",
        [
            ("Sports teach children to handle losing and try again.", "losing|lose|resilien", 2),
            ("Team sports build friendships and cooperation.", "team|friend|cooperat", 2),
            ("Sports keep children active at a time of rising obesity.", "active|obesity|fitness|exercise", 2),
        ],
    ),
    (
        "Cash should be abolished",
        "Cashless payments are convenient and stop tax evasion and crime.",
        [
            ("Elderly and poor people often lack bank accounts or cards.", "elderly|bank account|unbanked|poor", 2),
            (
                "Card systems fail in power cuts and cyber attacks; cash still works.",
                "power cut|outage|cyber|attack",
                2,
            ),
            ("Cash protects privacy: not every purchase should be tracked.", "privacy|tracked|surveil", 2),
        ],
    ),
    (
        "Genetically modified crops are dangerous",
        "We do not know the long-term effects of changing food genes.",
        [
            (
                "Decades of studies and billions of meals found no harm from approved GM food.",
                "studies|decades|no harm|evidence",
                2,
            ),
            ("GM crops resistant to pests need fewer pesticides.", "pesticide|pest", 2),
            (
                "Vitamin-enriched crops like golden rice prevent blindness in poor countries.",
                "golden rice|vitamin|blindness",
                2,
            ),
        ],
    ),
    (
        "Celebrities should stay out of politics",
        "Being famous does not make someone an expert on policy.",
        [
            ("Celebrities are citizens with the same right to speak as anyone.", "citizen|right|free speech", 2),
            ("Famous voices have raised awareness of causes like famine relief.", "awareness|famine|charity", 2),
            ("Young people who ignore politics may register to vote thanks to a star.", "register|young|vote", 2),
        ],
    ),
    (
        "Online learning is as good as classroom learning",
        "Online courses offer the same content anywhere and at any pace.",
        [
            ("Completion rates of online courses are very low.", "completion|drop out|dropout", 2),
            ("Labs, workshops and sports cannot be learned through a screen.", "lab|workshop|hands on|practical", 2),
            ("Children learn social skills from classmates in person.", "social skills|classmates|in person", 2),
        ],
    ),
    (
        "Billionaires should not exist",
        "No one can earn a billion fairly; such wealth comes from exploiting workers.",
        [
            (
                "Most billionaires built companies whose products millions chose to buy.",
                "built|products|founded|company",
                2,
            ),
            ("Their wealth is mostly shares, which fund investment and jobs.", "shares|stock|invest", 2),
            ("Some give huge sums to research and disease eradication.", "philanthrop|donat|give|eradicat", 2),
        ],
    ),
    (
        "Daylight saving time should be kept",
        "Longer light in the evening saves energy and is good for leisure.",
        [
            ("Studies found the energy savings are negligible today.", "energy|negligible|saving", 2),
            (
                "The clock change increases heart attacks and accidents in the following days.",
                "heart|accident|sleep",
                2,
            ),
            ("Farmers and schools are disrupted by the shift twice a year.", "farmer|disrupt|twice", 2),
        ],
    ),
    (
        "Teachers should be replaced by AI tutors",
        "AI tutors are patient, available all day and adapt to each student.",
        [
            ("Teachers notice when a child is upset or in danger at home.", "upset|danger|wellbeing|well being", 2),
            ("AI tutors make factual mistakes that students cannot detect.", "mistake|error|hallucinat|wrong facts", 2),
            ("Motivation comes from a human relationship with a mentor.", "motivat|relationship|mentor", 2),
        ],
    ),
    (
        "Extreme sports should be banned",
        "They cause terrible injuries and the rescue costs fall on everyone.",
        [
            ("Adults have the right to choose their own risks.", "right|choose|freedom|autonomy", 2),
            (
                "Far more people are injured by ordinary sports like football and cycling.",
                "football|ordinary|cycling",
                2,
            ),
            ("Safety gear and training keep accident rates low.", "gear|training|helmet", 2),
        ],
    ),
    (
        "Handwriting should no longer be taught",
        "Everyone types now, so handwriting lessons are a waste of time.",
        [
            ("Writing by hand helps children learn letters and remember notes.", "remember|learn letters|memory", 2),
            ("Exams and forms are still often handwritten.", "exam|forms|handwritten", 2),
            ("Fine motor skills develop through handwriting practice.", "motor", 2),
        ],
    ),
    (
        "Local news is no longer needed",
        "National outlets and social media already cover everything.",
        [
            ("Without local reporters, corruption in town councils goes unnoticed.", "corruption|council|watchdog", 2),
            (
                "National outlets rarely cover school boards or local courts.",
                "school board|local court|rarely cover",
                2,
            ),
            ("Studies link the loss of local papers to lower voter turnout.", "turnout|voter", 2),
        ],
    ),
    (
        "Tipping should be mandatory",
        "Waiters depend on tips to earn a living wage.",
        [
            (
                "Employers should pay a fair wage instead of passing it to customers.",
                "employer|fair wage|living wage",
                2,
            ),
            ("A mandatory tip is just a hidden price increase.", "hidden|price|service charge", 2),
            ("Tips depend on looks and bias rather than the quality of service.", "bias|looks|discriminat", 2),
        ],
    ),
    (
        "Violent protests are never justified",
        "Violence hurts innocent people and discredits the cause.",
        [
            (
                "Slave revolts and resistance to occupation used force against tyranny.",
                "tyranny|revolt|occupation|resistance",
                2,
            ),
            (
                "When peaceful protest is banned and met with shooting, people have little choice.",
                "banned|shooting|no choice|peaceful protest",
                2,
            ),
            (
                "History judges some uprisings, like the ones against apartheid, as justified.",
                "apartheid|uprising|history",
                2,
            ),
        ],
    ),
    (
        "Pets should not be kept in apartments",
        "Animals need space and gardens to be happy.",
        [
            ("Cats and small dogs live happily indoors with enough play.", "cat|small dog|indoor", 2),
            ("Pets reduce loneliness for people living alone in cities.", "lonel|alone|companion", 2),
            ("Daily walks and parks give dogs the exercise they need.", "walk|park|exercise", 2),
        ],
    ),
    (
        "Renewable energy cannot power a whole country",
        "The sun does not always shine and the wind does not always blow.",
        [
            ("Batteries and pumped hydro store energy for calm, dark hours.", "batter|storage|store|hydro", 2),
            (
                "Countries like Iceland and Costa Rica already run almost fully on renewables.",
                "iceland|costa rica|norway",
                2,
            ),
            ("Grids connecting wide areas smooth out local weather.", "grid|interconnect|wide area", 2),
        ],
    ),
    (
        "Cosmetic surgery should be banned",
        "It exploits insecurity and carries health risks.",
        [
            ("Reconstructive surgery helps burn victims and cancer patients.", "reconstruct|burn|cancer", 3),
            ("Adults can make decisions about their own bodies.", "own body|own bodies|autonomy|decide", 2),
            ("A ban would push people to unsafe clinics abroad.", "unsafe|abroad|black market", 1),
        ],
    ),
    (
        "Children's TV advertising should be allowed",
        "Ads fund children's programmes and parents decide what to buy.",
        [
            ("Young children cannot tell adverts from programmes.", "cannot tell|distinguish|understand ads", 2),
            ("Junk food adverts are linked to childhood obesity.", "junk|obesity|sugar", 2),
            ("Pester power puts pressure on poorer parents.", "pester|pressure", 2),
        ],
    ),
    (
        "Music education is unnecessary",
        "Few children become musicians, so schools should focus on core subjects.",
        [
            ("Learning an instrument improves memory and attention.", "memory|attention|brain", 2),
            ("Music lessons teach perseverance through daily practice.", "persever|practice|discipline", 2),
            ("Orchestras and choirs build community across backgrounds.", "orchestra|choir|community", 2),
        ],
    ),
    (
        "Space tourism should be banned",
        "It burns fuel for the pleasure of a few rich people.",
        [
            (
                "Tourist flights fund reusable rockets that cut the cost of science missions.",
                "reusable|cost of|science mission",
                2,
            ),
            ("Its emissions are tiny compared with ordinary aviation.", "emission|aviation|tiny", 2),
            (
                "Every new industry, like flying, started as a luxury for the rich.",
                "luxury|new industry|aviation history|started",
                2,
            ),
        ],
    ),
    (
        "Juries should be replaced by professional judges",
        "Ordinary people lack legal knowledge and are swayed by emotion.",
        [
            (
                "Juries bring community values and protect against state overreach.",
                "community|overreach|state power",
                2,
            ),
            (
                "Judges can become case-hardened and biased towards the prosecution.",
                "case hardened|prosecution|bias",
                2,
            ),
            ("Studies show juries usually agree with what the judge would decide.", "agree|studies|same verdict", 2),
        ],
    ),
    (
        "Libraries are obsolete",
        "Everything is online, so we no longer need public libraries.",
        [
            (
                "Libraries give free internet and computers to people who cannot afford them.",
                "free internet|computer|afford",
                2,
            ),
            ("They are warm public spaces for study, clubs and the homeless.", "public space|warm|homeless|study", 2),
            ("Librarians teach people to find reliable information.", "librarian|reliable|information literacy", 2),
        ],
    ),
    (
        "Fireworks should be banned for private use",
        "They injure people, scare animals and pollute the air.",
        [
            ("Most injuries come from illegal fireworks, which a ban would not stop.", "illegal|black market", 2),
            ("Fireworks are a cherished tradition at festivals and new year.", "tradition|festival|new year", 2),
            ("Quiet fireworks and fixed dates reduce the stress on pets.", "quiet|fixed date|low noise", 2),
        ],
    ),
    (
        "Children should not be allowed to play tackle football",
        "Repeated hits cause brain injuries in growing children.",
        [
            (
                "Rule changes and limits on contact practice cut head impacts sharply.",
                "rule change|limit contact|contact practice",
                2,
            ),
            (
                "Cycling and horse riding cause more head injuries among children.",
                "cycling|horse|more head injuries",
                2,
            ),
            ("The sport teaches discipline and keeps teenagers out of trouble.", "discipline|trouble|teenager", 2),
        ],
    ),
    (
        "Single-use coffee cups should be banned",
        "Billions of cups end up in landfill every year.",
        [
            ("Reusable cups must be used hundreds of times to beat disposables on carbon.", "hundreds|reusable", 2),
            ("Compostable cups and deposit schemes solve the waste without a ban.", "compost|deposit", 2),
            ("Hospitals and travellers rely on disposable cups for hygiene.", "hygiene|hospital|traveller|traveler", 2),
        ],
    ),
    (
        "Grades should be abolished in schools",
        "Grades make students chase marks instead of learning.",
        [
            ("Grades tell students and parents clearly where they need to improve.", "improve|feedback|where they", 2),
            ("Universities and employers need a comparable record.", "universit|employer|comparable", 2),
            ("Without grades, teachers' subjective impressions decide everything.", "subjective|impression|bias", 2),
        ],
    ),
    (
        "Bottled water should be banned",
        "Tap water is safe, and plastic bottles pollute.",
        [
            ("In many places tap water is unsafe or contaminated.", "unsafe|contaminat|not safe", 3),
            ("Disaster relief depends on bottled water.", "disaster|relief|emergency", 2),
            ("Bottles are recyclable and deposit schemes recover most of them.", "recycl|deposit", 1),
        ],
    ),
    (
        "Graffiti is vandalism, not art",
        "Painting on other people's walls without permission is damage.",
        [
            ("Many cities commission murals and legal graffiti walls.", "commission|mural|legal wall", 2),
            ("Artists like Banksy are exhibited in major galleries.", "banksy|galler", 2),
            ("Street art brightens neglected neighbourhoods and draws visitors.", "neglected|brighten|visitors", 2),
        ],
    ),
    (
        "Older people should have to retake driving tests",
        "Eyesight and reactions decline with age, making older drivers dangerous.",
        [
            ("Young drivers cause far more crashes per mile than older ones.", "young driver|per mile|more crashes", 2),
            (
                "Age alone is a poor predictor; medical checks target real problems.",
                "medical check|predictor|target",
                2,
            ),
            ("In rural areas losing a licence means losing independence.", "rural|independen|isolat", 2),
        ],
    ),
    (
        "Summer holidays should be shortened",
        "Children forget much of what they learned over the long break.",
        [
            ("Long summers let families travel and children rest.", "rest|travel|family time", 2),
            ("Summer camps and jobs teach skills school cannot.", "camp|summer job|skills", 2),
            ("Schools without air conditioning are too hot to teach in July.", "air condition|too hot|heat", 2),
        ],
    ),
    (
        "Smoking should be banned completely",
        "Tobacco kills millions, and a ban would save lives.",
        [
            ("Prohibition of alcohol created black markets and organised crime.", "prohibition|black market|crime", 3),
            ("Adults should be free to take risks with their own health.", "free|freedom|own health|choice", 2),
            (
                "Taxes and smoking bans in public places are already cutting smoking rates.",
                "rates|falling|public places",
                1,
            ),
        ],
    ),
    (
        "Wealthy countries should open their borders completely",
        "Free movement would end poverty and is a basic human right.",
        [
            ("Sudden mass arrivals could overwhelm housing and schools.", "housing|overwhelm|schools", 2),
            ("Poor countries would lose the doctors and engineers they trained.", "brain drain|doctors|engineers", 2),
            (
                "Managed migration with legal routes works better than no control at all.",
                "managed|legal route|quota",
                2,
            ),
        ],
    ),
    (
        "Exams should be replaced by coursework",
        "Exams test memory under pressure, coursework shows real skill.",
        [
            ("Coursework is easy to copy or have parents and AI write.", "copy|cheat|plagiar|ai write", 2),
            ("Students from richer homes get more help with coursework.", "richer|help at home|advantage", 2),
            ("Some pressure prepares students for real deadlines.", "deadline|pressure prepares|real life", 2),
        ],
    ),
    (
        "Humans should colonise Mars",
        "Making humanity multi-planetary protects us from extinction.",
        [
            ("Mars has no breathable air, deadly radiation and toxic soil.", "radiation|air|toxic|soil", 2),
            ("The cost would be better spent protecting Earth's climate.", "cost|climate|earth first", 2),
            ("Colonists' children would be born without consent into a hostile world.", "consent|born|children", 2),
        ],
    ),
    (
        "Influencers should be regulated like advertisers",
        "Paid posts mislead followers who think they are honest opinions.",
        [
            ("Existing consumer law already requires disclosing paid posts.", "already|disclos|consumer law", 2),
            ("Small creators cannot afford lawyers to comply with heavy rules.", "small creator|lawyer|comply", 2),
            ("Followers are not naive; they know influencers earn money.", "naive|know|aware", 2),
        ],
    ),
    (
        "Homeschooling is better than attending school",
        "At home children learn at their own pace without bullying or wasted time.",
        [
            (
                "Children at school learn to get along with people unlike themselves.",
                "get along|socialis|socializ|diverse",
                2,
            ),
            ("Few parents can teach advanced chemistry or calculus well.", "chemistry|calculus|advanced|expert", 2),
            ("Teachers are trained to spot learning difficulties early.", "spot|difficult|dyslexia|trained", 2),
        ],
    ),
    (
        "Lotteries should be banned",
        "Lotteries prey on the poor with odds that are almost impossible.",
        [
            ("Lottery profits fund schools, sports and good causes.", "fund|good cause|charity|profits", 2),
            (
                "Adults may spend their money on harmless entertainment if they choose.",
                "entertainment|harmless|choose",
                2,
            ),
            ("A ban would push players to illegal gambling with no protections.", "illegal|underground|unregulated", 2),
        ],
    ),
]
