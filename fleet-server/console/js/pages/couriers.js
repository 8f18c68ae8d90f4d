// Couriers and their open tasks: parcels to bring to a reserved compartment, and expired
// or cancelled parcels to collect. A courier's own login sees only its own tasks.

import { api } from '../api.js';
import { h, fill, link, table, heading, badge, when } from '../ui.js';

export async function render(main, ctx) {
  if (ctx.path === '/tasks') return tasks(main, ctx.me.courier, 'My tasks');
  if (ctx.params[0]) return tasks(main, ctx.params[0], `Courier ${ctx.params[0]}`, true);
  const list = await api('/couriers');
  fill(main, heading('Couriers'),
    table('Couriers', [
      ['Courier', c => link(`/couriers/${encodeURIComponent(c.id)}`, c.id)],
      ['Name', c => c.name],
      ['Tenant', c => c.tenant, { narrow: true }],
      ['Since', c => when(c.created_at), { narrow: true }],
    ], list.items, { empty: 'No couriers yet.' }));
}

async function tasks(main, courier, title, back) {
  const t = await api(`/couriers/${encodeURIComponent(courier)}/tasks`);
  const deliver = t.items.filter(x => x.task === 'deliver').length;
  fill(main,
    back ? h('p', {}, link('/couriers', '← Couriers')) : null,
    heading(title),
    h('p', {}, `${t.items.length} open task${t.items.length === 1 ? '' : 's'}: ${deliver} to deliver, ${t.items.length - deliver} to collect.`),
    table('Open tasks', [
      ['Task', x => badge(x.task)],
      ['Parcel', x => x.reference],
      ['Cabinet', x => x.cabinet],
      ['Compartment', x => x.compartment],
      ['State', x => badge(x.state), { narrow: true }],
      ['Due', x => when(x.due)],
    ], t.items, { empty: 'No open tasks.' }));
}
