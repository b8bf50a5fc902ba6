// The messages the upstream pushes on {"feed": count, "size": bytes}: JSON
// records of about `size` characters that look like an application's (ids,
// names and words from a small vocabulary, numbers, timestamps), so that
// compression finds what it would find in real traffic, neither one repeated
// string nor noise. Seeded: every system receives the same sequence, and the
// harness can compute what a complete feed adds up to.

const FIRST = ["Ada", "Boris", "Chen", "Dana", "Emeka", "Freya", "Goran", "Hana", "Ines", "Jonas", "Kofi", "Lena", "Mateo", "Noor", "Olga", "Pavel"];
const LAST = ["Ito", "Novak", "Okafor", "Silva", "Jensen", "Kowalski", "Haddad", "Moreau", "Schmidt", "Tanaka", "Rossi", "Nguyen"];
const WORDS = ("order shipped delayed warehouse invoice customer refund priority express standard pending confirmed " +
  "cancelled returned parcel courier address billing discount coupon inventory restock supplier batch pallet " +
  "fragile oversized tracking signature weekend holiday region north south east west central").split(" ");
const STATUSES = ["pending", "confirmed", "packed", "shipped", "delivered", "returned"];
const CITIES = ["Lisbon", "Oslo", "Lagos", "Osaka", "Lyon", "Gdansk", "Austin", "Pune", "Quito", "Tartu"];

// mulberry32: small, fast, and the same on every node version.
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The `count` messages of a feed, as JSON texts; record `n` is message n. */
export function feedMessages(count, size, seed = 1) {
  const next = random(seed);
  const pick = (list) => list[Math.floor(next() * list.length)];
  const int = (below) => Math.floor(next() * below);
  const start = Date.UTC(2026, 0, 1);
  const messages = [];
  for (let n = 0; n < count; n++) {
    const record = {
      n,
      id: `ord_${(100000 + int(900000)).toString(36)}${int(1e6).toString(36)}`,
      status: pick(STATUSES),
      ts: new Date(start + n * 1500 + int(1000)).toISOString(),
      customer: { id: 10000 + int(90000), name: `${pick(FIRST)} ${pick(LAST)}`, city: pick(CITIES), vip: next() < 0.1 },
      items: [],
      total: 0,
      tags: [pick(WORDS), pick(WORDS)],
    };
    let text = JSON.stringify(record);
    while (text.length < size - 45) {
      const price = Math.round(next() * 20000) / 100;
      const quantity = 1 + int(4);
      record.items.push({ sku: `${pick(WORDS).slice(0, 3).toUpperCase()}-${int(10000)}`, qty: quantity, price, note: `${pick(WORDS)} ${pick(WORDS)} ${pick(WORDS)}` });
      record.total = Math.round((record.total + price * quantity) * 100) / 100;
      text = JSON.stringify(record);
    }
    messages.push(text);
  }
  return messages;
}
