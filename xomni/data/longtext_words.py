"""Frozen set of the lowercase words in the LongText-Bench target strings (English and Chinese files).

Generated from the shipped prompts, xomni/data/longtext/*.jsonl, with `xomni.data.words.benchmark_words`; these words
never enter the train split (tests/test_data.py checks that this list covers the benchmark files).
"""
LONGTEXT_WORDS = frozenset("""
a about absolutely absorbing accept accessories acclaimed accomplished account achieve achievement
achievements acid acknowledge acorns acoustic acrobatic across act activeboost actively activities activity
acts actual actually addiction admire admission admit admittance adopting advanced advancement adventure
adventurers advertised advertising advised affected affirmations african after afternoon again age ages ago
ah ahead aim air airline airways alert alerts alex alive all alleyways allied allow almond almonds alpine
alter always am ambience amboseli amelia american amethyst amid amidst among amphibious amphitheater amulet
an analysis ancient and andean animal anna anne announce annual annually anxiety any anyone anything anytime
anyway anywhere apartment apologize appetite apples appreciate approximately april archaeologists archer
architectural arctic are area areas aren argentinian arm aromatic around arrival arrivals arrive art articles
artifacts artisan artist artistry arts artspace as ask asparagus assigned assignments assistance astonishment
at athens attention august aurora authentic author authorities autumn available avenue average avoid await
awaits awake awaken award awarded away axis azurite b ba back baked bakeries bakery balance balcony ballroom
bamboo ban band bands basil bath battery bay bc bce be bean beans beauty become bedtime before begin beginner
beginners behind being bel belle benjamin bennett best better between beyond big biggest biodiversity
biological birds birdwatching bishop bistro blame blend bliss blocks boarding boat body bold bonsai book
bookings books bookshelf boost boosts booth boots botanical both bottles boundaries bowl brave brazil
brazilian bread breaking breaks breakthrough breathing breathtaking brewed brews bridge brief brighter
brilliant bring bronze brooklyn brooks brulee bruschetta bubble buddy build building burger buried bury
business bustling but butter buy by ca cafe cafes cakes calibration call calm calming calmness calms can
canals cancel candlelight canvas capable capsizes captivating captured caramelized carbon carcharias
carcharodon care carefully carnival carolina carter case cashier casual cat caution celebrate celebrated
celebration center central ceramic ceremonial ceremony certain certificate challenge chamomile champions
championship change changing chapter charger charleston charlotte charm charming chasing check checked
cheesecake chef cherished chevrolet chicago children china chocolate choose churches ciabatta cinema cinemas
cinnamon circa circus citizens city civilization clara clarify clarke class classic clay cleaning clear
clearly clears climate clinical clock close clothing clown cluster coaching coastal coffee cold collaborate
collaboration collected collection collectively colombian colorful colors com come comedic comfort
comfortably commencing comment commitment common commonly communicating communication communities community
company compatible completed complex complimentary components computer concentration concert conditions
conference confidence confidently confused connect connected connections conquer conserve considering
constructing constructive contact contained contemporary contents context continues continuous contributions
control controlled conversations convertible converts cooking cool copper coral core corner corners could
counts coupe courage courses cozy crafts craftsmanship crater cravings cream creamy create created creative
creativity creme crispy critical croissants crossing crowds crucial crust crystal crystals cubic cues cuisine
cuisines cultivate cultural culture cultures cup cups curated curiosity curve custard custom d daily
dailyflow dairy daniel dark dashboard date dating day days dazzling dear dearest december decision decisions
decorated dedicated deep deeper deeply defending delay delicate delicious demonstrations demos departure
depression desert design designate desk desserts destinations detailed details detected detective determined
detox developing development devices dialogue did didn diet differences digital dill direct directed directly
director disappearing disconnect discount discover discovers discovery discussions disrupt distilled
distinguish distract distraction distractions district dizzy do doesn dogs domination don donut donuts doom
doors double down downtime downtown dragon drama dramatic dream dreamed dreams drew drink drive drought due
during duty dwelling dynamic e each earbuds earlier early east easy eat eating eats echeveria echoes eco
ecoliving economic economy ecosystems edition effective effort effortlessly efforts eggs egypt egyptian
eleanor electric electricity electronic elephant elephants elizabeth email embrace embracing emergency emily
emotion emotional emotions empanadas empathy empower empowering enchanted encourage encouraging endangered
endangers endless endorphins ends endurance energize energy engage engagement engine engineering england
english enhance enjoy enrich enroll entrance entry environmental epic epoque equinox era error espresso
essential essentials est establish estimated ethan ethanol ethiopia europe evacuation evacuations even
evening every everyday everywhere evexpo evidence exactly exaggerated excavation excellence excellent
exceptional exclusive exemplary exercise exercises exhibition exhibitions expectations expected experience
experiences expert exploration explore exploring exposure express expression expressions ez face fairgrounds
fall families family famous far farm farmers fatigue favors fear fears featuring feedback feel feeling
feelings fern festival fifa fifteenth fight fill filled fillet films final finally find finish fire first
fish fishing fit fitlife fitness five flavor flavorful flavors flawless flight flooding floor floral florence
flowers flu fluorite focus focused folk follow followed following fondly food foolishly foothold footprint
for forces ford forests forever forgot formed forum fossil fountain four fragile fragmented france francisco
francs free freely french fresh freshly friday friend friendly friends fries from fruits fuel full fully fun
further future g gale gallery games garden gardens garlic gate gates gear gelato gems gen generations gentle
geological gerais get giant give glaciers glass glaze gliding glimpse global globally glowing gluten goal
goals gold golden gondolas good gourmet grade grain grams grand grandma gratitude great greatly greek green
greener greenery greenfield greens greenview greetings grow growth guarantees guest guide guided guidelines
guides gulp gusts habitat habits half hall hand handcrafted handle handmade handpicked hands happens
happiness harmony harper hart hartfield harvest harvested haunt have hazelnut health healthier healthy hear
heart heavy heirloom help helping helps henry herbal herd here heritage hidden highly highs hiking himalayan
historic history hmm holders hole home homemade homes honestly honey hooting hoping horizons horizontal hot
hour hours how hr hub huge human humanity humans humidity hunan hundreds hunger hydrated hydrochloric i icon
iconic idea ideas identities if ignite ii illinois illuminate illustrated imagine immediate immediately
immunity impact impactful impacts important improve improved improvements in inches include inconvenience
increase indie individuals indulge indus industry infinite information informed infused ingredients
inhabitants initiated initiative inner innovate innovation innovative innovators inquiries inside insights
inspiration inspire installations instead integrate interactive interest internal international intervals
into introduce introduces introductions invasion invite is isn issue issued it italian items its j jacob jade
jam james japanese jazz jellyfish jn johnson join jonathan journal journey joyfully joys judging july june
juniperus just k keep kenya key keys kids kindly kingdom kings kingsley knight kyoto l labels lair lake
lakeview landings landmarks landscape lane lantern largest last lasting late later latte laughter launch
launched lavender layering lead leaders leadership leafy learn learned learning learnnest least leatherback
led left legendary lemon lemur length lens leopard less lesson lessons let levels library life lifelong
lifestyle light lightning like limit limited limitless limitlesslife lining linking lion liquid listen lists
literacy little live lives living ll local locally logic london long look looming lost louvre love lovely low
luck luna luxury m macaron madagascar made magic magical mail main mainly maintain maintaining make makers
making malachite management mane manor map maple maps march margaret margherita marine mark market marking
marriage mars marveling mask massive master mastering masterpiece masterpieces matcha matriarchs may mayan
maybe me meadowbrook meal meals mean meaning meaningful means medical meditation mediterranean medium meerkat
meet meeting melodies membership memo memorable memories memory mentioned message meters metro metropolitan
microbial micropipette migrant migrate miles million miltonia minas mind mindbloom mindful mindfulness minds
mindset minimize minimizes minute minutes miss missing mission mistake misunderstandings modern moments
monday mood moonlit more morning mornings moss motivated mountain mountainviewspa moved movement movies mph
ms much muffins mugs murder music musicians must mustang my myself mystery nasa national native natural
naturally nature nazi nearby nearly need neighbor neighborhood neon neoncityhub net never new news next night
nights no noble nobody nocturnal noodles normal normandy not notes notice notification notifications nourish
november now nutrition ny o oakwood observe occasion occupied ocean oceans octahedron october octopus of off
offer offering offers often oil old olive olives on onboard once one ongoing only onto opalized open opening
openly openness operation optimism optimistic or orchestral orchid orchidaceae organic organize origin
original others our out outbreaks outside outstanding oven over overall overly overnight oxfordshire oxygen
pacific pack packed paige painting paintings pan panda panel paris park parker parking pass passenger passion
past pastries path paths peace peach pence pendant perfect perfection perfectly performance performances
perhaps periods personal peru phone photography photovoltaic phrases physical picked picnic picturesque
pieces pineapple pines pirate pizza place places plan planet plant plastic plastics plate play plays
playwright plaza please pleasure plunge pm poems poetic point pollution pomodoro portable portions positive
positivity possibilities possible potatoes potential potentially potion pottery power powerful practical
practice practices practicing pre precisely predator premium prep prepare present presented presents preserve
preserving price primarily primary priorities prioritize prioritized pro probably procedure processors
produce product productivity professionals profile program programs progress projects prolonged promising
promote properly protect protecting providing province public pure pursue pushing quality quarter quartz
questions quick quiet railroad rain rainfall rainforest rapidly rare raw rd re reach reads real realities
reasoning recent reception recession recharge recipe recipes recognition recognize reconnect record recovered
rectangles recycle recycling red redefine reduce reducing reefs reflect reflections refocus refresh refreshes
refrigerate regain region regular regularly regulate relationships relax relaxing relieves religious rely
remember reminders renaissance renew renewable rentals replenishes reply represents request rescue
researchers reserve residents resilience resisting resonate resort resources respectfully responses
responsibly rest restaurants restful restores retreat revealing reverse reward rhythm rich ride riders rides
ridge right ring rings ripe risked ritual rivera rivers riverside road roast roasted robot role rolls romance
romantic rome room roots rosemary rosewood rough routes routine routines rover row rum run s safer sailing
salad sale salmon sample samples san sandals saturday saturdays sauce sauteed savannah save saying says
scenery scientists scratch screen screens scroll sea seamless search seared seas season seasonal seat seats
second secures seeds seek seems seen selection self sensitive sentiments september serenade serene serenity
series served service serving session sessions set severe shape shaping share sharing shark sharply sheds
shelter shine ship shop short shot should showcasing showing shows shutdown shutter side sights signals
significant significantly signing silence silent simple since single sir site sites situations sized sk skies
skill skills sky skylink sleep sleeping slow slowing slowly small smart smartwatch smooth smoothies snacks
snails sneaky snow so social solar sold soldiers solution someone somerset somewhere soon sorry soul sounds
soundtrack soup sourdough south southern spa space spacecraft spare speak speaking speaks speakwise special
specialize specials species specific specimen spectacular speed spent sponsored spot spots springfield square
stalls stamp star staring starlit starring stars start starters starting starts stay step steps stick stocks
stop stories storm strange strategies strawberries strawberry street streets strength stress strictly
struggle struggles stylehive styles styling stylish success succulent succulents sufficient sugar sugary
suggest sulfate summer summit sunday sunlight sunny sunrise sunset superior supplies support supportive
supposed sure surf surfboard survival survive suspect sustain sustainability sustainable sustainably
sustaining sustains sweaters sweet switch sword symbolizing syrup t tail tailed take tale talks taller tanaka
target tart tasks taste tastebuds tastes tea team teams tech technique technology technova telling
temperature temperatures temple temples ten tender tenth th thai thanks that the theater theatre their them
then these they thing think thinking this thorn those thoughtful thousand thousands threats three thrilling
thrills thrives through throughout ticket tickets tidy time timely times tips tireless to today together
togethers tomato tomatoes tomorrow tone tonight too tools top topped total tours town track tracking
traditional trail tranquility transform transformational transformed transparency transport travel treasured
treatments treats tree trees trials triangle tricks tripease tropical true trust try trying turbine turn
turning turtle twenty two ultra um under understand understanding underway unearth unfiltered unforgettable
unique universal unknown unlock unlocking unmistakable unnecessary unveil unwind up update upright upside
urge us usage use used v vacation vaccine valid valley valuable vanilla variety vase ve vegan vegetables
vegetarian veggies vehicles venice verse very vessel victory video view vision visionary visions visit
visited visitors visualize vital volcano voyage wait walks wall walters wander war wardrobe warm warmest
warms warning warnings was waste water waterfront waters waterways wave waves way ways we weather weber
wedding week weekday weekend weeknight welcome well wellbeing wellness were weren what when where whisper
whispering whisperings white whitmore who whole why wildflower wildlife wildly will willow wind winning
winter wireless wisely wiser wish wishes with within without witness wizard won wonders wood words work
workers workout workouts workshops workspace world worldwide worry wt x year years yesterday yet york you
your yours yourself youth zen zone zones
""".split())
