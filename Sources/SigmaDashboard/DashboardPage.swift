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
    const fmtRate=r=>r>=1e6?(r/1e6).toFixed(2)+'M':r>=1e3?(r/1e3).toFixed(1)+'k':r.toFixed(0);
    const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
    function chart(canvas,series,colors,max,label){const c=canvas.getContext('2d'),w=canvas.width,h=canvas.height;c.clearRect(0,0,w,h);
      c.strokeStyle='#eef0f3';for(let i=1;i<4;i++){c.beginPath();c.moveTo(0,h*i/4);c.lineTo(w,h*i/4);c.stroke();}
      const m=max||Math.max(1e-9,...series.flat());series.forEach((s,k)=>{c.strokeStyle=colors[k];c.lineWidth=2;c.beginPath();
      s.forEach((v,i)=>{const x=w-(s.length-1-i)*(w/120),y=h-4-(h-8)*Math.min(1,v/m);i?c.lineTo(x,y):c.moveTo(x,y);});c.stroke();});
      c.fillStyle='#556';c.font='12px system-ui';c.fillText(label+' (max '+(max?max:fmtRate(m))+')',6,14);}
    </script>
    """

    static let overview = """
    <!doctype html><html><head><meta charset="utf-8"><title>Sigma dashboard</title>\(style)</head><body>
    <header><h1>Σ Sigma</h1><span id="summary">connecting…</span></header>
    <main>
    <section><h2>Cluster over time</h2><div class="charts">
    <canvas id="util" width="520" height="150"></canvas><canvas id="tput" width="520" height="150"></canvas></div>
    <div class="muted">utilisation: shards in flight ÷ slots (blue), CPU ÷ cores (orange); throughput: shards completed per second</div></section>
    <section><h2>Jobs</h2><table><thead><tr><th>ID</th><th>Name</th><th>Kind</th><th>State</th><th>Progress</th><th></th><th>Re-runs</th><th>Hedges</th><th>Elapsed</th><th>ETA</th></tr></thead><tbody id="jobs"></tbody></table></section>
    <section><h2>Workers</h2><table><thead><tr><th>ID</th><th>Name</th><th>Host</th><th>State</th><th>CPU %</th><th>Memory</th><th>In flight</th><th>Items/s</th><th>RTT</th><th>Bytes in</th><th>Bytes out</th><th>LZ4</th><th>Done</th><th>BLAS</th></tr></thead><tbody id="workers"></tbody></table></section>
    <p class="muted">Prometheus metrics: <a href="/metrics">/metrics</a> · JSON: <a href="/api/status">/api/status</a></p>
    </main>\(common)
    <script>
    const util=[],cpu=[],tput=[];let lastDone=null,lastT=null;
    function render(s){
      const live=s.workers.filter(w=>w.state!=='dead'),slots=live.reduce((a,w)=>a+w.slots,0),inflight=live.reduce((a,w)=>a+Math.min(w.in_flight,w.slots),0);
      const cores=live.reduce((a,w)=>a+w.cores,0),cpus=live.reduce((a,w)=>a+w.cpu_percent,0);
      const now=Date.now()/1000,done=s.totals.shards_done;
      if(lastDone!==null&&now>lastT){tput.push((done-lastDone)/(now-lastT));} lastDone=done;lastT=now;
      util.push(slots?inflight/slots:0);cpu.push(cores?cpus/(cores*100):0);[util,cpu,tput].forEach(a=>{while(a.length>120)a.shift();});
      chart(document.getElementById('util'),[util,cpu],['#3b82f6','#f59e0b'],1,'utilisation');
      chart(document.getElementById('tput'),[tput],['#10b981'],0,'shards/s');
      document.getElementById('summary').textContent=`${live.length} workers live · ${slots} slots · policy ${s.policy} · ${s.queued_shards} shards queued · up ${fmtDur(s.uptime_s)} · ${s.build}`;
      document.getElementById('jobs').innerHTML=s.jobs.slice().reverse().map(j=>`<tr><td><a href="/job/${j.id}">${j.id}</a></td><td>${esc(j.name)}</td><td>${j.kind}</td><td class="state-${j.state}">${j.state}</td>
        <td><span class="bar"><span style="width:${(100*j.progress).toFixed(1)}%"></span></span></td><td>${j.steps?('step '+j.step+'/'+j.steps+(j.loss!==undefined?' loss '+j.loss.toFixed(4):'')):(j.done+'/'+j.total)} (${(100*j.progress).toFixed(0)}%)</td>
        <td>${j.reruns}</td><td>${j.hedges}</td><td>${fmtDur(j.elapsed_s)}</td><td>${j.eta_s!==undefined?fmtDur(j.eta_s):'-'}</td></tr>`).join('')||'<tr><td colspan="10" class="muted">no jobs yet</td></tr>';
      document.getElementById('workers').innerHTML=s.workers.map(w=>`<tr><td>${w.id}</td><td>${esc(w.name)}</td><td>${esc(w.host)}</td><td>${w.state}</td><td>${w.cpu_percent.toFixed(0)}</td>
        <td>${fmtBytes(w.rss_bytes)}</td><td>${w.in_flight}</td><td>${w.throughput_items_per_s?fmtRate(w.throughput_items_per_s):'-'}</td><td>${w.rtt_us?fmtDur(w.rtt_us/1e6):'-'}</td>
        <td>${fmtBytes(w.bytes_in)}</td><td>${fmtBytes(w.bytes_out)}</td><td>${w.compression_ratio.toFixed(2)}</td><td>${w.shards_done}</td>
        <td${w.blas_below_best?' class="state-failed" title="below what this CPU can run"':''}>${esc(w.blas||'-')}${w.blas_below_best?' (best: '+esc(w.blas_best)+')':''}${w.blas_choice?' · '+esc(w.blas_choice):''}</td></tr>`).join('')||'<tr><td colspan="14" class="muted">no workers</td></tr>';
    }
    function connect(){const es=new EventSource('/api/events');es.onmessage=e=>render(JSON.parse(e.data));
      es.onerror=()=>{document.getElementById('summary').textContent='reconnecting…';};}
    const initial=__INITIAL__;if(initial)render(initial);connect();
    </script></body></html>
    """

    static let job = """
    <!doctype html><html><head><meta charset="utf-8"><title>Sigma job</title>\(style)</head><body>
    <header><h1><a href="/">Σ Sigma</a></h1><span id="title">loading…</span></header>
    <main>
    <section><h2>Job</h2><div id="info"></div></section>
    <section><h2>Shard timeline</h2><canvas id="timeline" width="1100" height="200"></canvas>
    <div class="muted">one track per worker; green ok, red failed, grey cancelled/late, orange lost, blue running; hatched: hedge</div></section>
    <section><h2>Log</h2><pre id="log" style="margin:0;white-space:pre-wrap"></pre></section>
    </main>\(common)
    <script>
    const id=location.pathname.split('/').pop();
    const colors={ok:'#10b981',failed:'#dc2626',cancelled:'#9ca3af',late:'#d1d5db',lost:'#f59e0b',declined:'#a78bfa',running:'#3b82f6'};
    function render(j){
      document.getElementById('title').textContent=`job ${j.id} ${j.name} (${j.kind}) — ${j.state}`;
      document.getElementById('info').innerHTML=`<table><tr><th>State</th><td class="state-${j.state}">${j.state}</td><th>Progress</th><td><span class="bar"><span style="width:${(100*j.progress).toFixed(1)}%"></span></span> ${j.steps?('step '+j.step+'/'+j.steps):(j.done+'/'+j.total+' shards')}</td></tr>
        <tr><th>Elapsed</th><td>${fmtDur(j.elapsed_s)}</td><th>ETA</th><td>${j.eta_s!==undefined?fmtDur(j.eta_s):'-'}</td></tr>
        <tr><th>Re-runs</th><td>${j.reruns}</td><th>Hedges</th><td>${j.hedges} (won ${j.hedges_won})</td></tr>
        <tr><th>Policy</th><td>${j.policy}</td><th>Digests</th><td>spec ${j.spec_digest} · input ${j.input_digest||'–'} · model ${j.model_digest||'–'}</td></tr>${j.error?`<tr><th>Error</th><td colspan="3" class="state-failed">${esc(j.error)}</td></tr>`:''}</table>`;
      const a=j.attempts,tracks=[...new Set(a.map(x=>x.worker+'@'+x.host))],cv=document.getElementById('timeline');
      cv.setAttribute('role','img');cv.setAttribute('aria-label','Shard timeline: '+tracks.length+' worker tracks ('+tracks.join(', ')+'), '+a.length+' attempts');
      cv.height=Math.max(60,24+tracks.length*22);const c=cv.getContext('2d'),w=cv.width,left=120;c.clearRect(0,0,w,cv.height);
      const end=Math.max(j.elapsed_s,...a.map(x=>x.finished_s||x.started_s),1e-6),sx=t=>left+(w-left-10)*t/end;
      c.font='12px system-ui';tracks.forEach((t,i)=>{c.fillStyle='#556';c.fillText(t,4,30+i*22);});
      a.forEach(x=>{const i=tracks.indexOf(x.worker+'@'+x.host),f=x.finished_s===null?j.elapsed_s:x.finished_s;c.fillStyle=colors[x.outcome]||'#999';
        c.fillRect(sx(x.started_s),18+i*22,Math.max(1,sx(f)-sx(x.started_s)),16);if(x.hedge){c.strokeStyle='#111';c.strokeRect(sx(x.started_s),18+i*22,Math.max(1,sx(f)-sx(x.started_s)),16);}});
      c.fillStyle='#556';c.fillText('0s',left,12);c.fillText(fmtDur(end),w-60,12);
      document.getElementById('log').textContent=j.log.map(l=>l.at_s.toFixed(3).padStart(9)+'s '+l.level.padEnd(8)+l.text).join('\\n');
    }
    function poll(){fetch('/api/jobs/'+id).then(r=>r.ok?r.json():Promise.reject(r.status)).then(j=>{render(j);if(!['completed','failed','cancelled'].includes(j.state))setTimeout(poll,2000);})
      .catch(e=>{document.getElementById('title').textContent='job '+id+': '+(e===404?'not found':'unavailable');setTimeout(poll,3000);});}
    poll();
    </script></body></html>
    """
}
