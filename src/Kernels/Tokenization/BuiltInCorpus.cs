namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// A small original English text (~30 KB: prose, dialogue, letters, Q&amp;A, chat transcripts, code,
/// logs, tables; with some French/German/Spanish/Chinese/Japanese/Greek/Russian, typography and
/// emoji) for training test tokenizers, e.g. with <see cref="BpeTrainer"/>. Written for this project.
/// </summary>
public static class BuiltInCorpus
{
    /// <summary>The corpus text.</summary>
    public const string Text = """"
The Lighthouse Keeper's Ledger

On the first morning of March the wind came round from the north-east and stayed there for nine days. Marta Ellison wrote it down in the ledger, as she wrote everything down: the direction of the wind, the height of the swell, the number of ships that passed the point, and the small things that nobody had asked her to record. "Gulls restless before noon." "Kettle took eleven minutes to boil." "Heard the foghorn from the mainland at 4:40, though there was no fog." Her predecessor had kept the ledger in a cramped, sloping hand that filled every line to the margin; hers was rounder and left room to breathe.

The lighthouse stood on a shelf of black rock about two miles from the harbour. At low tide you could almost walk across to the island of Carrick, if you did not mind wet boots and the risk of being cut off; at high tide the channel ran fast and green and cold. Supplies came every second Thursday on a boat called the Patience, which was older than Marta and, she suspected, in better repair. The boatman, a quiet man named Hollis, never stayed longer than it took to unload the crates, but he always asked the same question before he left.

"Anything to send back?"

"Letters," she would say, and hand him the envelopes, three or four of them, addressed to people she had not seen in years. Sometimes she got answers. More often she did not, and that was all right too.

She had not meant to stay so long. The posting was supposed to be for a single winter, a chance to save money and to think. But the winter turned into a spring, and the spring into a year, and by the third autumn she had stopped counting. There was a rhythm to the work that suited her: the lamp to be trimmed and wound, the brass to be polished, the glass of the lantern room to be cleaned of salt every morning whether it needed it or not. In the evenings she read, or mended things, or sat on the gallery with a mug of tea and watched the lights of the fishing boats strung out along the horizon like beads on a wire.

It was on one of those evenings that she first saw the other light.

It was small and low, well to the south of the shipping lane, and it did not move the way a boat's light moves. It blinked twice, paused, blinked three times, paused, and then repeated the pattern: two, three; two, three. She watched it for an hour. When she went inside she opened the ledger and wrote, "Unidentified light, bearing approx. 190°, pattern 2–3, steady, 21:15 to 22:20." Then, after a moment, she added a question mark, and then she crossed the question mark out, because the ledger was for facts.

The next night the light was there again. And the next.

"You'll want to tell the harbourmaster," Hollis said on Thursday, when she described it to him. He squinted south across the water, as if he might see it in daylight. "Could be a buoy that's slipped its mooring. Could be someone's idea of a joke."

"A buoy doesn't flash in twos and threes."

"Some do. The new ones. They put all sorts of patterns on them now." He shrugged and climbed back into the Patience. "Tell the harbourmaster," he said again, and pushed off.

She did tell him, by letter, and the harbourmaster wrote back a week later to say that no buoys had been reported missing, that no new navigational marks had been laid in that area, and that he would be grateful if she would continue to observe and report. It was a polite letter, typed on thick paper, and it told her nothing at all.

So she continued to observe. She bought a notebook just for the light, a cheap one with squared paper, and every night she marked down when it appeared and when it went out. After a month she had a column of times that looked like nonsense, and then, one wet Sunday afternoon, she noticed that each night's first appearance came about fifty minutes later than the night before. Fifty minutes. She sat back in her chair and listened to the rain. The tide, she thought. Whatever it is, it follows the tide.

A Conversation in the Kitchen

"Are you going to eat that?" asked Tom, pointing at the last slice of toast with the butter knife.

"I was considering it," said Priya. "Give me a minute. I'm weighing my options."

"It's toast. There aren't many options."

"There's marmalade, there's honey, there's that jar of lemon curd your mother sent, which I don't trust, and there's nothing. Nothing is underrated." She picked up the slice, examined it, and put it down again. "Actually, you have it. I've lost interest."

"You can't lose interest in toast."

"Watch me."

Tom took the toast. Outside, the dog next door began its afternoon campaign against the postman, a campaign it had been losing, with great dignity, for six years. The kettle clicked off. Neither of them moved to pour it.

"Did you hear back about the job?" Tom asked eventually.

"Not yet. They said Friday. Or Monday. Or 'early next week', which I think means never." Priya pulled her knees up onto the chair and wrapped her arms around them. "I keep refreshing my inbox like it owes me money."

"It might be good news."

"It might. It might also be a very kind email telling me that they were 'impressed by the depth of my experience' but have 'decided to move forward with other candidates'. I have a folder of those. I could publish them as a collection. Poetry of rejection, volume one."

"Volume one implies there'll be a volume two."

"There's always a volume two." She smiled, though, and reached for the teapot at last. "Do you want a cup?"

"Please. Milk, no sugar."

"I know how you take it, Tom. We've lived together for four years."

"I'm just saying it out loud so the universe knows. In case the universe is also making tea."

She laughed, and poured, and for a while the only sounds were the spoon against the china and the dog, still barking, somewhere beyond the fence.

Notes from a Walking Tour

Day 1. Left the station at 9:15 with a rucksack that weighed, by my estimate, roughly as much as a small child. Followed the canal path west for eleven kilometres. Herons: four. Cyclists who rang their bells at me: nineteen. Cyclists who did not ring their bells and simply appeared at my elbow like ghosts: at least six. Lunch was a cheese sandwich eaten on a lock gate while a narrowboat called Serendipity II rose slowly past me. The man at the tiller nodded. I nodded back. We understood each other.

Day 2. Rain. Not dramatic rain, just a steady, patient drizzle that found its way into every seam of my jacket. The path left the canal and climbed through beech woods, and the leaves overhead made a sound like applause. I reached the village of Upper Wendle at about four and took a room above the pub. The landlady asked whether I was "doing the whole route" and, when I said yes, gave me a look that combined pity and respect in about equal measure.

Day 3. Sunshine, finally. Walked the ridge for most of the day with views north over three counties. Met a retired geologist named Frank who explained, in great and loving detail, why the hills on the left were older than the hills on the right. I understood about a third of it. He gave me a piece of flint with a fossil sea urchin in it and told me it was a hundred million years old. It is now in my pocket. I keep touching it to make sure it's still there.

Day 4. Blisters. Let us not speak of day 4.

Day 5. Arrived at the coast in the late afternoon. The path came over the last rise and there it was: the sea, grey-blue and enormous, with the white line of the surf drawn along the bottom of the cliffs. I sat on the grass for a long time and did not think about anything at all. Then I went down to the harbour, found a café, and ordered the largest portion of chips they were willing to sell me.

How a Tokenizer Works (Informal Notes)

A language model does not read letters; it reads numbers. Before any text reaches the model it is cut into pieces called tokens, and each token is replaced by an integer id. The program that does this is the tokenizer, and it has two jobs that must agree with each other: encoding, which turns text into ids, and decoding, which turns ids back into text. If decode(encode(x)) is not equal to x, something has gone wrong.

Byte-pair encoding, or BPE, is one of the simplest ways to build a tokenizer. You start with a tiny vocabulary, for example the 256 possible values of a byte, and a large pile of training text. You count every pair of adjacent symbols in the text. The most frequent pair is merged into a new symbol, which is added to the vocabulary. Then you count again, merge again, and repeat until the vocabulary is as large as you want. Common words end up as single tokens; rare words are spelled out from smaller pieces; and nothing is ever "unknown", because in the worst case a word can always be written as its raw bytes.

A few practical details matter a great deal:

1. Pre-tokenization. Before merging, the text is split into chunks, usually with a regular expression, so that merges never cross certain boundaries. A typical rule keeps a leading space attached to the following word, splits digits from letters, and keeps punctuation separate. This is why " the" and "the" are often different tokens.
2. Determinism. When two pairs have the same count, the trainer must break the tie the same way every time, or two runs on the same text will produce different vocabularies.
3. Speed. Recounting every pair after every merge is far too slow. A good trainer keeps a table of pair counts and updates only the entries that a merge actually changes.
4. Special tokens. Markers such as <s>, </s> or <|endoftext|> are not learned from text. They are added by hand, given fixed ids, and matched before the BPE step so they are never split.

Decoding has its own traps. A single character such as "é" is two bytes in UTF-8, and an emoji such as 🚀 is four. If a model produces tokens one at a time, a character may arrive in two halves. A streaming decoder must wait for the second half instead of printing a replacement character (U+FFFD, the little diamond with a question mark) in the middle of a word.

Here is a tiny example in Python-like pseudocode:

    def train_bpe(words, vocab_size):
        vocab = list(range(256))
        merges = []
        while len(vocab) < vocab_size:
            counts = count_pairs(words)
            if not counts:
                break
            best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
            new_id = len(vocab)
            vocab.append(best)
            merges.append(best)
            words = [merge(w, best, new_id) for w in words]
        return vocab, merges

And the same idea in C#:

    public static int[] Merge(int[] word, int a, int b, int newId)
    {
        var result = new List<int>(word.Length);
        for (int i = 0; i < word.Length; i++)
        {
            if (i + 1 < word.Length && word[i] == a && word[i + 1] == b)
            {
                result.Add(newId);
                i++;
            }
            else
            {
                result.Add(word[i]);
            }
        }
        return result.ToArray();
    }

The output of training is usually saved as JSON. A minimal file might look like this:

    {
      "version": "1.0",
      "model": {
        "type": "BPE",
        "vocab": { "a": 0, "b": 1, "ab": 2 },
        "merges": [ ["a", "b"] ]
      }
    }

Numbers deserve a note of their own. Should "2024" be one token or four? Some tokenizers split every digit; others allow runs of up to three digits; others let BPE decide. Each choice changes how well a model can do arithmetic, compare version numbers like 3.10 and 3.9, or copy a phone number such as +44 20 7946 0958 without mistakes.

Letters Between Two Gardeners

Dear Agnes,

The frost came early this year and took the dahlias in a single night. I went out at seven with my coffee and found them black and collapsed, like umbrellas left out in a storm. I should have lifted the tubers a week ago; you told me so, and you were right, and I am writing it down here so that you have it in ink. The leeks, on the other hand, are magnificent. I have never grown leeks like them. I have no idea what I did differently, which is the most annoying kind of success.

How is the new greenhouse? Did the glazier ever come back to fix the panel by the door? I still think you should have gone with polycarbonate, but I know better than to argue with you about anything involving glass.

Yours, with muddy hands,
Bernard

Dear Bernard,

The glazier came back on Tuesday, fixed the panel, drank three cups of tea, and told me a long story about his cousin's racing pigeons. I now know more about racing pigeons than I ever wished to. Did you know they can find their way home from six hundred miles away? Neither did I, and frankly I was happier not knowing, because now I look at the pigeons on the station roof and wonder where they are all trying to get to.

I am sorry about the dahlias, but not very sorry, because I did tell you. Next year, lift them in October, dry them off in the shed, and store them in a box of old compost somewhere frost-free. Write it on the calendar. Write it on your hand.

The greenhouse is wonderful. I have tomatoes still ripening in November, which feels like cheating. I have also discovered that a greenhouse is a perfect place to sit and read when it is raining, and I have been doing rather a lot of that. I am currently halfway through a biography of a Victorian plant hunter who went to the Himalayas to collect rhododendrons and very nearly did not come back. The chapter about the river crossing is not for the faint-hearted.

Send me some of those leeks and I will forgive you everything.

Agnes

P.S. The seed catalogue arrived. I have circled seventeen things. I have room for perhaps four.

Dear Agnes,

Leeks are in the post, wrapped in newspaper and optimism. I could not fit the whole row into the parcel, so you have the six best; I have kept the rest for soup.

Seventeen things! Tell me at least one of them is a vegetable you can actually eat. Last year you circled nothing but ornamental grasses and a black sunflower that looked, when it finally bloomed, like something from a horror film.

Bernard

Dear Bernard,

Two of them are edible. One is a climbing bean called "Cherokee Trail of Tears", which has a sad name and a beautiful black seed, and the other is a purple carrot. The other fifteen are flowers and I refuse to apologise. A garden with only vegetables in it is a farm, and I did not retire to run a farm.

The leeks arrived in perfect condition. Thank you. I made a pie.

Agnes

Voices from Elsewhere (Mixed Languages)

In Zürich the trams run so precisely that people set their watches by them, or so the guidebooks claim. Lena, who grew up there, says this is "halb wahr" — half true. "Die Trams sind pünktlich," she told me, "aber die Leute sind es nicht." The trams are punctual; the people are not.

At a café near the Sorbonne, the waiter corrected my order with enormous patience. I had asked for "un café au lait, s'il vous plaît", which was fine, and then for "une croissant", which was not. "Un croissant, monsieur," he said, gently, as if explaining something to a child. The coffee was excellent. The croissant was better. Déjà vu: I made exactly the same mistake the next morning, and he corrected me in exactly the same tone.

Naïve questions are the best kind. A friend who was learning Spanish once asked why "¿" is upside down at the start of a question. The answer — that it warns you a question is coming, so you can raise your voice in time — seemed so sensible that she wondered, out loud, why English had never bothered. "¡Qué buena pregunta!" said her teacher.

My grandmother kept a recipe book in three languages. The cake recipes were in German, the soups in Polish, and the notes in the margins — "zu süß!", "more salt", "nie dla gości" (not for guests) — were in whatever language she happened to be thinking in at the time. I have the book now. Some of the pages are stuck together with what I am fairly sure is jam from 1974.

在城市的另一边，有一家很小的书店。老板每天早上八点开门，晚上九点关门，从来不休息。他说：“书比人有耐心。”我在那里买了一本旧诗集，书页已经发黄，但字还很清楚。

我们明天去爬山吧。天气预报说会是晴天，气温大概二十度。记得带水和雨伞，山上的天气变化很快。

東京の朝はとても静かです。電車はまだ空いていて、コーヒーの香りが駅の中に広がっています。

In Athens, a street vendor sold me a koulouri and taught me three words of Greek: καλημέρα (good morning), ευχαριστώ (thank you), and νερό (water). I used all three that day, though not always in the right order.

Моя соседка каждое утро поливает цветы на балконе и поёт. Я не знаю, что это за песня, но она очень красивая.

Emoji have become a language of their own. 🙂 means "I am being friendly" or "I am furious but polite", depending on who sends it. 👍 can mean "great!" or "I have stopped reading your message". 🚀 means a launch, or a stock price, or enthusiasm of any kind. 🌍🌎🌏 are the same planet seen from three angles. ❤️ is love, 🔥 is excitement, 🎉 is a party, and 🤔 is the face you make when someone sends you a spreadsheet at 11 p.m. on a Friday.

Typography has its own small alphabet: the em dash (—), the en dash (–), the ellipsis (…), “curly double quotes”, ‘curly single quotes’, the degree sign (°), the section sign (§), the pilcrow (¶), the multiplication sign (×), and the euro (€), the pound (£), the yen (¥). A price of €12.50 is not the same string as EUR 12.50, and a careful program treats them differently.

Señora Ruiz ran the bakery on the corner for thirty-one years. Her empanadas were famous, her opinions were stronger than her coffee, and her coffee was very strong indeed. When she retired, the whole street came to the party, and someone made a banner that read "¡Gracias, Señora Ruiz!" in letters a foot high.

Field Manual for the Small Server Room

Rule one: label everything. Every cable, every power lead, every box that hums. A label costs four seconds; an unlabeled cable costs an afternoon.

Rule two: the fan that is making a new noise is the fan that is about to fail. Replace it on a Tuesday, when you have time, rather than on a Saturday night, when you do not.

Rule three: back up, and then check that the backup can be restored. A backup that has never been restored is not a backup; it is a hope.

Typical startup log from the inference service:

    2025-03-14T08:02:11Z INFO  starting server version=0.4.2 pid=31337
    2025-03-14T08:02:11Z INFO  loading tokenizer path=/models/tiny-moe/tokenizer.json vocab=4096
    2025-03-14T08:02:12Z INFO  loading weights shards=4 dtype=bf16 experts=8 top_k=2
    2025-03-14T08:02:19Z WARN  kv cache sized below recommended minimum blocks=512 recommended=1024
    2025-03-14T08:02:19Z INFO  listening address=0.0.0.0:8080
    2025-03-14T08:05:47Z ERROR request failed id=req-7f3a reason="prompt too long" tokens=9012 limit=8192

Configuration file, annotated:

    # server.yaml
    model:
      path: /models/tiny-moe
      max_batch_size: 16        # sequences decoded together
      max_seq_len: 8192
    sampling:
      temperature: 0.7
      top_p: 0.95
      repetition_penalty: 1.05
    logging:
      level: info               # debug | info | warn | error

A shell session, for the record:

    $ du -sh /models/*
    1.2G    /models/tiny-moe
    47G     /models/mixtral-8x7b
    $ nvidia-smi --query-gpu=name,memory.used --format=csv
    name, memory.used [MiB]
    NVIDIA H200, 1024 MiB
    $ curl -s localhost:8080/health
    {"status":"ok","uptime_s":215}

A small SQL query that answers "which requests were slowest yesterday?":

    SELECT request_id, model, prompt_tokens, completion_tokens, latency_ms
    FROM requests
    WHERE created_at >= CURRENT_DATE - INTERVAL '1 day'
      AND created_at < CURRENT_DATE
    ORDER BY latency_ms DESC
    LIMIT 20;

And a helper in JavaScript that formats a duration:

    function formatDuration(ms) {
      if (ms < 1000) return `${ms} ms`;
      const s = ms / 1000;
      if (s < 60) return `${s.toFixed(1)} s`;
      const m = Math.floor(s / 60);
      return `${m} min ${Math.round(s % 60)} s`;
    }

Rule four: when you change something, write down what you changed, when, and why. Future you is a stranger who will need your help.

Rule five: if a problem disappears when you look at it, it has not disappeared. It is waiting.

The Clockmaker's Apprentice

When Oskar was fourteen his mother took him to the workshop on Weaver Street and left him there with a man who smelled of oil and pipe smoke and did not, at first, say a single word. The workshop was long and narrow, lit by a row of windows along one side, and every surface was covered with clocks: mantel clocks and wall clocks, carriage clocks with brass handles, a grandfather clock with a painted moon in its face, and dozens of pocket watches laid out on green felt like fish on a market stall. All of them were ticking, and none of them agreed.

"Which one is right?" Oskar asked, after a while.

The clockmaker looked up from his bench. He had a loupe screwed into one eye, which made the eye enormous. "None of them," he said. "That is why they are here."

The first month Oskar did nothing but clean. He cleaned brass with a soft cloth and a paste that smelled of ammonia; he cleaned tiny gears in a jar of spirit and laid them out to dry on tissue paper; he swept the floor twice a day, because a single lost screw, the clockmaker said, could cost a week of work. The second month he was allowed to take a movement apart, as long as he put it back together again, and it took him nine days, and when he was finished there was one spare wheel left on the bench and the clock would not run.

"Good," said the clockmaker.

"Good? It doesn't work."

"Now you know what it feels like. Everyone has one spare wheel, the first time. Take it apart again."

He took it apart again. This time he drew each piece on paper before he removed it, and numbered the drawings, and laid the pieces out in the same order on the felt. It took him six days. When he had finished, there was no spare wheel, and the clock ran for forty minutes before it stopped.

"Better," said the clockmaker.

Years later, when Oskar had a workshop of his own, he kept a jar on the shelf above his bench with a single brass wheel in it, and when apprentices asked him what it was for, he told them it was the most important part of any clock. Most of them thought he was joking. The good ones worked it out eventually.

Questions and Answers

Q: Why does the sky look blue?
A: Sunlight contains every colour, but the shorter blue wavelengths are scattered much more strongly by the molecules in the air than the longer red ones. Look anywhere in the sky except directly at the sun and you are mostly seeing that scattered blue light.

Q: Why is the sunset red, then?
A: At sunset the light travels through far more air to reach you. Most of the blue has been scattered away before it arrives, so what is left is weighted toward orange and red.

Q: How many bytes does the letter "a" take in UTF-8? And "é"? And "中"? And "🙂"?
A: One, two, three and four, respectively. ASCII characters take one byte; most accented Latin letters take two; most Chinese, Japanese and Korean characters take three; and emoji outside the Basic Multilingual Plane take four.

Q: What is 17 × 23?
A: 391. One way to see it: 17 × 20 = 340, and 17 × 3 = 51, and 340 + 51 = 391.

Q: What is the capital of Australia?
A: Canberra, not Sydney. Canberra was chosen in 1908 partly as a compromise between Sydney and Melbourne, which both wanted the title.

Q: Can you give me a haiku about rain?
A: Grey roof, steady drum —
   the gutter learns a new song
   and sings it all night.

Q: What should I do if my program works on my machine but not on the server?
A: Compare the environments before you compare the code: versions of the runtime and libraries, environment variables, file paths, permissions, locale and time zone settings, and the amount of memory available. Then add logging at the point where the behaviour first differs.

Assistant Transcripts (Illustrative)

User: Can you help me plan a three-day trip to Lisbon?
Assistant: Of course! Here is a simple plan. Day 1: walk through Alfama in the morning, visit the castle of São Jorge, and watch the sunset from a miradouro. Day 2: take the tram to Belém for the monastery, the tower, and a pastel de nata at the famous bakery. Day 3: a day trip to Sintra for the palaces and gardens. Would you like restaurant suggestions as well?
User: Yes please, something not too expensive.
Assistant: Look for a tasca, a small family-run restaurant. Many offer a prato do dia, a dish of the day, at a fixed price that includes bread and a drink. Grilled sardines are excellent in summer.

User: Explain recursion in one sentence.
Assistant: Recursion is when a function solves a problem by calling itself on a smaller version of the same problem, until it reaches a case simple enough to answer directly.

User: Write a function that reverses a string.
Assistant: Here is one way in Python:

    def reverse(s: str) -> str:
        return s[::-1]

And in C#:

    static string Reverse(string s)
    {
        var chars = s.ToCharArray();
        Array.Reverse(chars);
        return new string(chars);
    }

Note that the C# version reverses UTF-16 code units, so it will break emoji and other characters made of surrogate pairs. For user-facing text, reverse by text elements instead.

User: Translate "good evening, how are you?" into French, German and Spanish.
Assistant: French: « Bonsoir, comment allez-vous ? » German: „Guten Abend, wie geht es Ihnen?“ Spanish: «Buenas noches, ¿cómo está usted?»

User: 你好！你能用中文回答吗？
Assistant: 当然可以！请问有什么我可以帮你的？

User: Summarize the rules of chess castling.
Assistant: The king moves two squares toward a rook, and that rook jumps to the square the king crossed. It is only allowed if neither piece has moved, the squares between them are empty, the king is not in check, and the king does not pass through or land on a square that is attacked.

User: thanks!!
Assistant: You're welcome! 😊 Let me know if there's anything else.

The Night Train

The night train to the border left at 22:47 from platform nine. Ilse had a ticket for a couchette in carriage 14, berth 3, and a paper bag with two apples, a bread roll and a bar of chocolate that she had already decided to save for the morning. The carriage smelled of disinfectant and old upholstery. Her companions were a student with enormous headphones, an elderly couple who unpacked an entire picnic on the fold-down table, and a man in a grey suit who read the same page of his newspaper for forty minutes and then fell asleep sitting upright.

At midnight the conductor came through to collect passports. At one o'clock the train stopped in a town whose name Ilse could not read in the dark, and a woman got on with a cage containing a very small and very angry parrot. At two the parrot fell silent. At three the train crossed a long bridge, and Ilse, who could not sleep, pulled back the curtain and saw the river below them, wide and silver under the moon, with the lights of a village scattered along the far bank.

She thought about the letter in her coat pocket, the one she had read so many times that the folds had gone soft. She thought about what she would say when the door opened at the other end. She thought about the chocolate. At four she ate one of the apples. At five the sky began to turn grey, and then pale yellow, and the student took off his headphones and said, to nobody in particular, "We're nearly there."

They were not nearly there. The train stopped for two hours outside a station for reasons that were never explained. But he had said it with such confidence that everyone in the compartment had sat up and started putting on their shoes, and afterwards, whenever Ilse thought about that journey, that was the moment she remembered best: six strangers in the half-light, all lacing up their shoes for an arrival that was still a long way off.

A Short Table

    city,country,population_millions,founded
    Lisbon,Portugal,0.55,-1200
    Zürich,Switzerland,0.42,15
    Kyoto,Japan,1.46,794
    Chengdu,China,20.94,-311
    Montréal,Canada,1.76,1642

Proverbs, Old and New

- Measure twice, cut once.
- A watched pot never boils, but an unwatched one boils over.
- The best time to plant a tree was twenty years ago; the second best time is now.
- Don't count your chickens before they hatch.
- Every expert was once a beginner.
- If it isn't tested, it's broken.
- Premature optimization is the root of a surprising amount of evil.
- There are only two hard things in computer science: cache invalidation, naming things, and off-by-one errors.
- 三人行，必有我师焉。(When three people walk together, one of them can be my teacher.)
- Petit à petit, l'oiseau fait son nid. (Little by little, the bird builds its nest.)

Markdown Checklist

## Release checklist

- [x] Bump the version number in `version.txt`
- [x] Update the changelog
- [ ] Run the full test suite (`dotnet test`)
- [ ] Tag the release: `git tag -a v0.4.2 -m "Release 0.4.2"`
- [ ] Announce it in the #releases channel

> **Note:** never tag a release from a branch that has not passed CI.

Mathematics in Plain Text

The area of a circle is π r², its circumference is 2 π r. For a right triangle, a² + b² = c². The sum 1 + 2 + 3 + … + n equals n(n + 1)/2, so the sum of the first 100 integers is 5050. If x ≥ 0 then √(x²) = x; otherwise it equals −x. The average of 3, 5 and 10 is 6, and the median is 5. Roughly 68% of a normal distribution lies within one standard deviation (σ) of the mean (μ), and about 95% within two.

Weather Report

Tomorrow: cloudy in the morning with a 40% chance of showers, clearing by the afternoon. Highs of 14 °C (57 °F), lows of 6 °C (43 °F). Winds from the south-west at 15–25 km/h, gusting to 40 km/h on exposed coasts. Sunrise 06:52, sunset 18:31. The weekend looks drier, with sunshine on Saturday and only light winds on Sunday — a good chance to get the washing out, or to finally clear the gutters.
"""";
}
