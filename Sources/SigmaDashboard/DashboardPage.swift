/// The dashboard's pages: self-contained HTML, CSS and JavaScript (no external assets, works offline).
enum DashboardPage {
    static let style = """
    <style>
    body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
    header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
    header h1{font-size:18px;margin:0} header a{color:#fff}
    main{padding:14px 18px} section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;margin-bottom:14px}
    h2{font-size:15px;margin:0 0 8px} table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eef0f3;white-space:nowrap}
    th{font-weight:600;color:#556} .bar{background:#e4e8ee;border-radius:3px;height:12px;width:180px;display:inline-block;vertical-align:middle}
    .bar>span{display:block;height:12px;border-radius:3px;background:#3b82f6} .charts{display:flex;gap:14px;flex-wrap:wrap}
    canvas{background:#fff;border:1px solid #eef0f3} .state-failed{color:#b91c1c} .state-completed{color:#15803d} .muted{color:#889}
    </style>
    """

    static let common = """
    <script>
    const fmtDur=s=>s<1e-3?(s*1e6).toFixed(0)+'µs':s<1?(s*1e3).toFixed(1)+'ms':s<120?s.toFixed(1)+'s':(s/60).toFixed(0)+'m';
    const fmtBytes=b=>b>=1073741824?(b/1073741824).toFixed(1)+' GiB':b>=1048576?(b/1048576).toFixed(1)+' MiB':(b/1024).toFixed(0)+' KiB';
    const fmtRate=r=>r>=1e6?(r/1e6).toFixed(2)+'M':r>=1e3?(r/1e3).toFixed(1)+'k':r.toFixed(r<10?1:0);
    const fmtPct=v=>(100*v).toFixed(0)+'%';
    const fmtClock=t=>{const d=new Date(t*1000);return [d.getHours(),d.getMinutes(),d.getSeconds()].map(x=>String(x).padStart(2,'0')).join(':');};
    const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
    const palette=['#e11d48','#0284c7','#65a30d','#c026d3','#ea580c','#0f766e','#4338ca','#a16207'];
    // A line chart with axes: xs (times, or steps with xfmt), series [{v, color, label, max?}] (null values leave gaps),
    // y labels on the first series' scale (fmt), x labels at five ticks, a legend; its aria-label says what it drew.
    function chart(cv,xs,series,o){const c=cv.getContext('2d'),w=cv.width,h=cv.height,L=48,R=10,T=20,B=20,pw=w-L-R,ph=h-T-B;
      c.clearRect(0,0,w,h);c.font='11px system-ui';c.lineWidth=1;
      const x0=xs.length?xs[0]:0,x1=xs.length?Math.max(xs[xs.length-1],x0+1e-9):1,sx=x=>L+pw*(x-x0)/(x1-x0);
      const top=k=>series[k].max||Math.max(1e-9,...series[k].v.filter(v=>v!==null&&isFinite(v)));
      const m0=series.length?top(0):1,xf=o.xfmt||fmtClock;
      for(let i=0;i<=4;i++){const y=T+ph*i/4;c.strokeStyle='#e5e7eb';c.beginPath();c.moveTo(L,y);c.lineTo(L+pw,y);c.stroke();
        c.fillStyle='#556';c.textAlign='right';c.fillText(o.fmt(m0*(1-i/4)),L-4,y+4);}
      c.strokeStyle='#374151';c.beginPath();c.moveTo(L,T);c.lineTo(L,T+ph);c.lineTo(L+pw,T+ph);c.stroke();
      if(xs.length){for(let i=0;i<=4;i++){const x=x0+(x1-x0)*i/4,px=sx(x);c.beginPath();c.moveTo(px,T+ph);c.lineTo(px,T+ph+4);c.stroke();
        c.textAlign=i==0?'left':i==4?'right':'center';c.fillText(xf(x),px,h-4);}}
      series.forEach((s,k)=>{const m=top(k);c.strokeStyle=s.color;c.lineWidth=2;c.beginPath();let pen=false;
        s.v.forEach((v,i)=>{if(v===null||!isFinite(v)){pen=false;return;}const px=sx(xs[i]),py=T+ph-ph*Math.min(1,Math.max(0,v/m));
          pen?c.lineTo(px,py):c.moveTo(px,py);pen=true;});c.stroke();});
      c.textAlign='left';c.fillStyle='#1d2330';c.font='600 12px system-ui';c.fillText(o.title,L,13);let lx=L+c.measureText(o.title).width+14;
      c.font='11px system-ui';series.forEach(s=>{c.fillStyle=s.color;c.fillRect(lx,5,10,8);c.fillStyle='#556';c.fillText(s.label,lx+13,13);lx+=c.measureText(s.label).width+26;});
      cv.setAttribute('role','img');
      cv.setAttribute('aria-label',o.title+': '+series.map(s=>s.label).join(', ')+'; '+xs.length+' points'+(xs.length?' from '+xf(x0)+' to '+xf(x1):''));}
    </script>
    """

    static let overview = """
    <!doctype html><html><head><meta charset="utf-8"><title>Sigma dashboard</title>\(style)</head><body>
    <header><h1>Σ Sigma</h1><span id="summary">connecting…</span></header>
    <main>
    <section><h2>Cluster over time</h2><div class="charts">
    <canvas id="util" width="590" height="170"></canvas><canvas id="tput" width="590" height="170"></canvas>
    <canvas id="perworker" width="1194" height="170"></canvas></div>
    <div class="muted">kept by the coordinator (one point a second, the last hour): a reload shows the past · utilisation: shards in flight ÷ slots · CPU: share of the hosts' cores · per worker: its shards in flight ÷ its slots</div></section>
    <section><h2>Workers</h2><table><thead><tr><th>ID</th><th>Name</th><th>Host</th><th>State</th><th>CPU %</th><th>Memory</th><th>In flight</th><th>Items/s</th><th>RTT</th><th>Bytes in</th><th>Bytes out</th><th>LZ4</th><th>Done</th><th>BLAS</th></tr></thead><tbody id="workers"></tbody></table></section>
    <section><h2>Jobs</h2><table><thead><tr><th>ID</th><th>Name</th><th>Kind</th><th>State</th><th>Progress</th><th></th><th>Rate</th><th>Re-runs</th><th>Hedges</th><th>Elapsed</th><th>ETA</th></tr></thead><tbody id="jobs"></tbody></table>
    <div id="pager" class="muted" style="margin-top:6px"><button id="prev">‹ newer</button> <span id="page"></span> <button id="next">older ›</button></div></section>
    <section id="serving" style="display:none"><h2>Deployments</h2><table><thead><tr><th>Name</th><th>Model</th><th>Replicas</th><th>Queued</th><th>Requests/s</th><th>p50 ms</th><th>p99 ms</th><th>Queue p50</th><th>Compute p50</th><th>Batch</th><th>429 / 503 / 504</th></tr></thead><tbody id="deployments"></tbody></table></section>
    <p class="muted">Prometheus metrics: <a href="/metrics">/metrics</a> · JSON: <a href="/api/status">/api/status</a>, <a href="/api/history">/api/history</a></p>
    </main>\(common)
    <script>
    let H={points:[],worker_labels:{},capacity:3600},last=null,page=0;const perPage=10;
    function drawCharts(){const p=H.points,ts=p.map(x=>x.t);
      chart(document.getElementById('util'),ts,[{v:p.map(x=>x.utilisation),color:'#7c3aed',label:'utilisation',max:1},{v:p.map(x=>x.cpu),color:'#f59e0b',label:'CPU',max:1}],{title:'Cluster utilisation',fmt:fmtPct});
      chart(document.getElementById('tput'),ts,[{v:p.map(x=>x.items_per_s),color:'#10b981',label:'items/s'},{v:p.map(x=>x.shards_per_s),color:'#64748b',label:'shards/s (own scale)'}],{title:'Throughput',fmt:fmtRate});
      const ids=[...new Set(p.flatMap(x=>Object.keys(x.workers)))].sort();
      chart(document.getElementById('perworker'),ts,ids.map((id,k)=>({v:p.map(x=>id in x.workers?x.workers[id]:null),color:palette[k%palette.length],label:H.worker_labels[id]||id,max:1})),{title:'Per worker: slots busy',fmt:fmtPct});}
    function jobRow(j){return `<tr><td><a href="/job/${j.id}">${j.id}</a></td><td>${esc(j.name)}</td><td>${j.kind}</td><td class="state-${j.state}">${j.state}</td>
        <td><span class="bar"><span style="width:${(100*j.progress).toFixed(1)}%"></span></span></td><td>${j.steps?(j.position+(j.loss!==undefined?' loss '+j.loss.toFixed(4):'')+(j.accuracy!==undefined?' acc '+fmtPct(j.accuracy):j.eval_loss!==undefined?' held-out loss '+j.eval_loss.toPrecision(4):'')):(j.done+'/'+j.total)} (${(100*j.progress).toFixed(0)}%)</td>
        <td>${j.rate_per_s!==undefined?fmtRate(j.rate_per_s)+' '+j.rate_unit+'/s':'-'}</td><td>${j.reruns}</td><td>${j.hedges}</td><td>${fmtDur(j.elapsed_s)}</td><td>${j.eta_s!==undefined?fmtDur(j.eta_s):'-'}</td></tr>`;}
    function renderJobs(){if(!last)return;const active=j=>j.state==='running'||j.state==='queued';
      const jobs=last.jobs.filter(active).reverse().concat(last.jobs.filter(j=>!active(j)).reverse()),pages=Math.max(1,Math.ceil(jobs.length/perPage));
      page=Math.min(page,pages-1);document.getElementById('jobs').innerHTML=jobs.slice(page*perPage,(page+1)*perPage).map(jobRow).join('')||'<tr><td colspan="11" class="muted">no jobs yet</td></tr>';
      document.getElementById('page').textContent=`page ${page+1} of ${pages} · ${jobs.length} jobs, running first`;
      document.getElementById('prev').disabled=page==0;document.getElementById('next').disabled=page>=pages-1;}
    document.getElementById('prev').onclick=()=>{page=Math.max(0,page-1);renderJobs();};
    document.getElementById('next').onclick=()=>{page++;renderJobs();};
    function render(s){last=s;const live=s.workers.filter(w=>w.state!=='dead'),slots=live.reduce((a,w)=>a+w.slots,0);
      const ds=s.deployments||[],ms=v=>v===undefined?'-':v.toFixed(v<10?2:0);document.getElementById('serving').style.display=ds.length?'':'none';
      document.getElementById('deployments').innerHTML=ds.map(d=>`<tr><td>${esc(d.name)}</td><td>${d.model}</td><td>${d.replicas_ready}/${d.replicas_wanted}</td><td>${d.queued}/${d.queue_limit}</td><td>${d.requests_per_s.toFixed(1)}</td><td>${ms(d.p50_ms)}</td><td>${ms(d.p99_ms)}</td><td>${ms(d.queue_p50_ms)}</td><td>${ms(d.compute_p50_ms)}</td><td>${d.mean_batch===undefined?'-':d.mean_batch.toFixed(1)}</td><td>${d.rejected_429} / ${d.unavailable_503} / ${d.timed_out_504}</td></tr>`).join('');
      const pt=s.history_point;if(pt&&(!H.points.length||pt.t>H.points[H.points.length-1].t)){H.points.push(pt);while(H.points.length>H.capacity)H.points.shift();
        live.forEach(w=>{H.worker_labels[w.id]=w.name+'@'+w.host;});drawCharts();}
      document.getElementById('summary').textContent=`${live.length} workers live · ${slots} slots · policy ${s.policy} · ${s.queued_shards} shards queued · up ${fmtDur(s.uptime_s)} · ${s.build}`;
      renderJobs();
      document.getElementById('workers').innerHTML=s.workers.map(w=>`<tr${w.state==='dead'?' class="muted"':''}><td>${w.id}</td><td>${esc(w.name)}</td><td>${esc(w.host)}</td><td>${w.state}</td><td>${w.state==='dead'?'-':w.cpu_percent.toFixed(0)}</td>
        <td>${fmtBytes(w.rss_bytes)}</td><td>${w.in_flight}</td><td>${w.throughput_items_per_s?fmtRate(w.throughput_items_per_s):'-'}</td><td>${w.rtt_us?fmtDur(w.rtt_us/1e6):'-'}</td>
        <td>${fmtBytes(w.bytes_in)}</td><td>${fmtBytes(w.bytes_out)}</td><td>${w.compression_ratio.toFixed(2)}</td><td>${w.shards_done}</td>
        <td${w.blas_below_best?' class="state-failed" title="slower than the best set for this CPU"':''}>${esc(w.blas||'-')}${w.blas_below_best?' (best: '+esc(w.blas_best)+')':''}${w.blas_choice?' · '+esc(w.blas_choice):''}</td></tr>`).join('')||'<tr><td colspan="14" class="muted">no workers</td></tr>';
    }
    function connect(){const es=new EventSource('/api/events');es.onmessage=e=>render(JSON.parse(e.data));
      es.onerror=()=>{document.getElementById('summary').textContent='reconnecting…';};}
    const past=__HISTORY__;if(past)H=past;const initial=__INITIAL__;if(initial)render(initial);drawCharts();connect();
    </script></body></html>
    """

    static let job = """
    <!doctype html><html><head><meta charset="utf-8"><title>Sigma job</title>\(style)</head><body>
    <header><h1><a href="/">Σ Sigma</a></h1><span id="title">loading…</span></header>
    <main>
    <section><h2>Job</h2><div id="info"></div></section>
    <section id="curves" style="display:none"><h2>Training</h2><canvas id="curve" width="1100" height="200"></canvas>
    <div class="muted">loss (left scale) and held-out accuracy (0–100 %) by step, as the coordinator sampled them</div></section>
    <section><h2>Shard timeline</h2><canvas id="timeline" width="1100" height="200"></canvas>
    <div class="muted">one lane per compute slot of each worker; green ok, red failed, grey cancelled/late, orange lost, blue running; outlined: hedge</div></section>
    <section><h2>Log</h2><pre id="log" style="margin:0;white-space:pre-wrap"></pre></section>
    </main>\(common)
    <script>
    const id=location.pathname.split('/').pop();
    const colors={ok:'#10b981',failed:'#dc2626',cancelled:'#9ca3af',late:'#d1d5db',lost:'#f59e0b',declined:'#a78bfa',running:'#3b82f6'};
    function timeline(j){const a=j.attempts,cv=document.getElementById('timeline'),tracks=[],lanes={};
      a.forEach(x=>{const k=x.worker+'@'+x.host;if(!(k in lanes)){tracks.push(k);lanes[k]=0;}lanes[k]=Math.max(lanes[k],x.lane+1);});
      const laneH=14,gap=2,groupGap=10,top=22,y0={};let y=top;tracks.forEach(k=>{y0[k]=y;y+=lanes[k]*(laneH+gap)+groupGap;});
      const total=tracks.reduce((n,k)=>n+lanes[k],0);
      cv.setAttribute('role','img');cv.setAttribute('aria-label','Shard timeline: '+tracks.length+' worker tracks, '+total+' slot lanes ('+tracks.map(k=>k+': '+lanes[k]).join(', ')+'), '+a.length+' attempts');
      cv.height=Math.max(60,y+8);const c=cv.getContext('2d'),w=cv.width,left=150;c.clearRect(0,0,w,cv.height);
      const end=Math.max(j.elapsed_s,...a.map(x=>x.finished_s||x.started_s),1e-6),sx=t=>left+(w-left-10)*t/end;
      c.font='12px system-ui';tracks.forEach(k=>{c.fillStyle='#1d2330';c.fillText(k,4,y0[k]+11);c.fillStyle='#889';c.font='10px system-ui';
        for(let l=1;l<lanes[k];l++)c.fillText('slot '+(l+1),18,y0[k]+l*(laneH+gap)+11);c.font='12px system-ui';});
      a.forEach(x=>{const f=x.finished_s===null?j.elapsed_s:x.finished_s,yy=y0[x.worker+'@'+x.host]+x.lane*(laneH+gap);c.fillStyle=colors[x.outcome]||'#999';
        c.fillRect(sx(x.started_s),yy,Math.max(1,sx(f)-sx(x.started_s)),laneH);if(x.hedge){c.strokeStyle='#111';c.strokeRect(sx(x.started_s),yy,Math.max(1,sx(f)-sx(x.started_s)),laneH);}});
      c.fillStyle='#556';c.fillText('0s',left,12);c.textAlign='right';c.fillText(fmtDur(end),w-10,12);c.textAlign='left';}
    function render(j){
      document.getElementById('title').textContent=`job ${j.id} ${j.name} (${j.kind}) — ${j.state}`;
      document.getElementById('info').innerHTML=`<table><tr><th>State</th><td class="state-${j.state}">${j.state}</td><th>Progress</th><td><span class="bar"><span style="width:${(100*j.progress).toFixed(1)}%"></span></span> ${j.steps?(j.position+(j.loss!==undefined?' · loss '+j.loss.toFixed(4):'')+(j.accuracy!==undefined?' · accuracy '+fmtPct(j.accuracy):j.eval_loss!==undefined?' · held-out loss '+j.eval_loss.toPrecision(4):'')):(j.done+'/'+j.total+' shards')}</td></tr>
        <tr><th>Elapsed</th><td>${fmtDur(j.elapsed_s)}</td><th>ETA</th><td>${j.eta_s!==undefined?fmtDur(j.eta_s):'-'}${j.rate_per_s!==undefined?' · '+fmtRate(j.rate_per_s)+' '+j.rate_unit+'/s over the last 10 s':''}</td></tr>
        <tr><th>Re-runs</th><td>${j.reruns}</td><th>Hedges</th><td>${j.hedges} (won ${j.hedges_won})</td></tr>
        <tr><th>Policy</th><td>${j.policy}</td><th>Digests</th><td>spec ${j.spec_digest} · input ${j.input_digest||'–'} · model ${j.model_digest||'–'}</td></tr>${j.error?`<tr><th>Error</th><td colspan="3" class="state-failed">${esc(j.error)}</td></tr>`:''}</table>`;
      const cu=j.curve||[];if(j.steps&&cu.length){document.getElementById('curves').style.display='';
        chart(document.getElementById('curve'),cu.map(p=>p[0]),[{v:cu.map(p=>p[1]),color:'#db2777',label:'loss'},{v:cu.map(p=>p[2]),color:'#0d9488',label:'accuracy (0–100 %)',max:1}],
          {title:'Loss and accuracy by step',fmt:v=>v.toFixed(v<1?3:2),xfmt:x=>'step '+Math.round(x)});}
      timeline(j);
      document.getElementById('log').textContent=j.log.map(l=>l.at_s.toFixed(3).padStart(9)+'s '+l.level.padEnd(8)+l.text).join('\\n');
    }
    function poll(){fetch('/api/jobs/'+id).then(r=>r.ok?r.json():Promise.reject(r.status)).then(j=>{render(j);if(!['completed','failed','cancelled'].includes(j.state))setTimeout(poll,2000);})
      .catch(e=>{document.getElementById('title').textContent='job '+id+': '+(e===404?'not found':'unavailable');setTimeout(poll,3000);});}
    poll();
    </script></body></html>
    """
}
